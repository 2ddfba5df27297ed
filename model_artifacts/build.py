"""The build step: eager model -> TorchScript -> parity check -> model.tar.gz + manifest.json."""
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from config import ConfigError
from model_artifacts import torchscript
from model_artifacts.runtime_export import EXPORT_INFO_FILE, EXPORTED_MODEL_FILE, convert
from model_artifacts.example_models import build_example_model
from model_artifacts.manifest import ARTIFACT_FILE, HANDLER_FILE, MANIFEST_FILE
from model_artifacts.packaging import sha256_of, write_reproducible_tarball

MODEL_INFO_FILE = "model_info.json"  # read back by inference_src/inference.py


@dataclass(frozen=True)
class BuildRequest:
    """What to build and for which serving runtime."""

    name: str
    model: str
    input_shape: Sequence[int]
    recipe: str
    target_framework: str
    target_framework_version: str
    target_profile: str
    image_preprocessing: dict  # read back by the handler for JPEG/PNG requests
    # A TorchScript archive converted by the runtime's own torch (runtime_export); None: convert here.
    runtime_export: Optional[Path] = None


Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_artifact(request: BuildRequest, out_dir: Path, progress: Optional[Progress] = None) -> dict:
    """Build `request` into out_dir/model.tar.gz and out_dir/manifest.json; return the manifest."""
    step = _Steps(request.name, progress or (lambda _: None), total=5)
    out_dir.mkdir(parents=True, exist_ok=True)

    with step("load model"):
        eager = build_example_model(request.model)
    model_info = {
        "input_shape": list(request.input_shape),
        "dtype": "float32",
        "model": request.model,
        "image_preprocessing": request.image_preprocessing,
    }
    extra_files = {MODEL_INFO_FILE: json.dumps(model_info, sort_keys=True)}
    if request.runtime_export:
        with step(f"take the runtime's TorchScript ({request.recipe}) from {request.runtime_export}"):
            exported = _runtime_export(request)
            archive = torchscript.normalize((request.runtime_export / EXPORTED_MODEL_FILE).read_bytes(), extra_files)
            build_torch_version = exported["torch_version"]
        with step("parity check (done by the runtime's torch when it exported)"):
            parity = {"max_abs_error": exported["max_abs_error"], "atol": 1e-4, "rtol": 0.0, "checked_with_torch": build_torch_version}
    else:
        with step(f"convert to TorchScript ({request.recipe})"):
            module = convert(eager, request.recipe, torch.zeros(tuple(request.input_shape)))
            archive = torchscript.save_reproducibly(module, extra_files)
            build_torch_version = torch.__version__.split("+")[0]
        with step("parity check against eager outputs"):
            report = torchscript.check_parity(eager, archive, request.input_shape)
            parity = {"max_abs_error": report.max_abs_error, "atol": report.atol, "rtol": report.rtol, "checked_with_torch": build_torch_version}
    with step("package model.tar.gz"):
        handler = HANDLER_FILE.read_bytes()
        requirements = (HANDLER_FILE.parent / "requirements.txt").read_bytes()
        artifact = out_dir / ARTIFACT_FILE
        files = {"model.pt": archive, "code/inference.py": handler, "code/requirements.txt": requirements}
        write_reproducible_tarball(artifact, files)
    with step("write manifest"):
        manifest = {
            "name": request.name,
            "artifact": ARTIFACT_FILE,
            "sha256": sha256_of(artifact),
            "size_bytes": artifact.stat().st_size,
            "files": {name: hashlib.sha256(content).hexdigest() for name, content in sorted(files.items())},
            "model": request.model,
            "recipe": request.recipe,
            "input_shape": list(request.input_shape),
            "dtype": "float32",
            "image_preprocessing": request.image_preprocessing,
            "build_torch_version": build_torch_version,
            "torchscript_archive_format_version": torchscript.archive_format_version(archive),
            "target_runtime": {
                "framework": request.target_framework,
                "framework_version": request.target_framework_version,
                "profile": request.target_profile,
            },
            "parity": parity,
        }
        (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _runtime_export(request: BuildRequest) -> dict:
    """The export's record, checked against what the configuration asks for."""
    info_path = request.runtime_export / EXPORT_INFO_FILE
    if not info_path.is_file() or not (request.runtime_export / EXPORTED_MODEL_FILE).is_file():
        raise ConfigError(
            f"model {request.name!r}: no runtime export in {request.runtime_export} ({EXPORTED_MODEL_FILE} + {EXPORT_INFO_FILE}); "
            "run `python -m model_artifacts.runtime_export` in the serving runtime's image first"
        )
    exported = json.loads(info_path.read_text())
    expected = {"model": request.model, "recipe": request.recipe, "input_shape": list(request.input_shape)}
    stale = [f"{key}: exported {exported.get(key)!r}, configured {value!r}" for key, value in expected.items() if exported.get(key) != value]
    if stale:
        raise ConfigError(f"model {request.name!r}: the runtime export in {request.runtime_export} is stale ({'; '.join(stale)}); export again")
    return exported


class _Steps:
    """Numbered progress lines with timings: `[image-classifier 2/5] convert ... done in 3.1s`."""

    def __init__(self, name: str, progress: Progress, total: int):
        self.name, self.progress, self.total, self.index = name, progress, total, 0

    def __call__(self, label: str) -> "_Steps":
        self.index += 1
        self.label = label
        return self

    def __enter__(self) -> None:
        self.started = time.perf_counter()
        self.progress(f"[{self.name} {self.index}/{self.total}] {self.label} ...")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.progress(f"[{self.name} {self.index}/{self.total}] {self.label}: done in {time.perf_counter() - self.started:.1f}s")
