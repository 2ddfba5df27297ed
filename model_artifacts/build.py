"""The build step: model -> TorchScript -> parity check -> model.tar.gz + manifest.json.

An unchanged rebuild is a no-op (model_artifacts.cache); an archive the serving runtime cannot
load is refused (model_artifacts.compatibility).
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from config import ConfigError
from model_artifacts import torchscript
from model_artifacts.cache import cache_key, up_to_date
from model_artifacts.compatibility import check_runtime_can_load
from model_artifacts.manifest import ARTIFACT_FILE, HANDLER_FILE, MANIFEST_FILE
from model_artifacts.packaging import sha256_of, write_reproducible_tarball
from model_artifacts.progress import Reporter
from model_artifacts.requests import BuildRequest

# Kept free of torch: runtime_export (run as a subprocess) is the only module here that imports it.
EXPORTED_MODEL_FILE = "model.pt"  # runtime_export's output files
EXPORT_INFO_FILE = "export.json"
REPO_ROOT = Path(__file__).resolve().parent.parent

MODEL_INFO_FILE = "model_info.json"  # read back by inference_src/inference.py
STEPS = 4


def build_artifact(request: BuildRequest, out_dir: Path, reporter: Optional[Reporter] = None) -> dict:
    """Build `request` into out_dir/model.tar.gz and out_dir/manifest.json; return the manifest."""
    reporter = reporter or Reporter(level="none")
    key = cache_key(request)
    cached = up_to_date(request, out_dir, key)
    if cached is not None:
        reporter.say(f"[{request.name}] up to date (sha256 {cached['sha256'][:12]})", level="summary")
        return cached
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / "model.pt"  # a working file, streamed into the tarball, then removed
    try:
        with reporter.model(request.name, STEPS) as progress:
            manifest = _build(request, out_dir, archive, progress)
    finally:
        archive.unlink(missing_ok=True)
    manifest["cache_key"] = key
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _build(request: BuildRequest, out_dir: Path, archive: Path, progress) -> dict:
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as scratch:
        if request.runtime_export:
            export_dir = request.runtime_export
            with progress.step(f"take the runtime's TorchScript ({request.recipe}) from {export_dir}"):
                exported = _exported(request, export_dir)
        else:
            export_dir = Path(scratch)
            with progress.step(f"load {request.source}, convert ({request.recipe}), check parity with this torch"):
                _export_in_a_fresh_interpreter(request, export_dir)
                exported = _exported(request, export_dir)
        with progress.step("normalize the archive (no debug records or local paths) and add the model info"):
            extra_files = {MODEL_INFO_FILE: json.dumps(_model_info(request), sort_keys=True)}
            torchscript.normalize(export_dir / EXPORTED_MODEL_FILE, archive, extra_files)
    build_torch = exported["torch_version"]
    format_version = torchscript.archive_format_version(archive)
    check_runtime_can_load(request.name, build_torch, request.target_framework_version, format_version, request.allow_newer_torch)

    files = {"model.pt": archive, "code/inference.py": HANDLER_FILE, "code/requirements.txt": HANDLER_FILE.parent / "requirements.txt"}
    artifact = out_dir / ARTIFACT_FILE
    with progress.step("package model.tar.gz", total_bytes=sum(p.stat().st_size for p in files.values())) as advance:
        write_reproducible_tarball(artifact, files, on_bytes=advance)
    with progress.step("write manifest"):
        return {
            "name": request.name,
            "artifact": ARTIFACT_FILE,
            "sha256": sha256_of(artifact),
            "size_bytes": artifact.stat().st_size,
            "files": {name: sha256_of(path) for name, path in sorted(files.items())},
            "model": request.source,
            "weights_sha256": sha256_of(request.weights) if request.weights else None,
            "recipe": request.recipe,
            "input_shape": list(request.input_shape),
            "dtype": request.input_dtype,
            "image_preprocessing": request.image_preprocessing,
            "build_torch_version": build_torch,
            "runtime_torch_version": request.target_framework_version,
            "allow_newer_torch": request.allow_newer_torch,
            "torchscript_archive_format_version": format_version,
            "target_runtime": {
                "framework": request.target_framework,
                "framework_version": request.target_framework_version,
                "profile": request.target_profile,
            },
            "parity": {**exported["parity"], "checked_with_torch": build_torch},
        }


def _export_in_a_fresh_interpreter(request: BuildRequest, out: Path) -> None:
    """runtime_export with this torch, in a new process: TorchScript mangles the names of classes it has
    compiled before in the same process, which would make a second build in one process differ."""
    source = ["--factory", request.factory] if request.factory else ["--model", request.example]
    if request.weights:
        source += ["--weights", str(request.weights)]
    command = [sys.executable, "-m", "model_artifacts.runtime_export", *source, "--recipe", request.recipe,
               "--input-shape", *map(str, request.input_shape), "--dtype", request.input_dtype, "--out", str(out)]
    # The child sees what this process sees: the repository, and the directory the factory is imported from.
    path = os.pathsep.join([str(REPO_ROOT)] + [p or os.getcwd() for p in sys.path])
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": path})
    if result.returncode != 0:
        _, marker, error = result.stderr.partition("error: ")
        raise ConfigError(f"model {request.name!r}: " + (error.strip() if marker else f"the conversion failed:\n{result.stderr.strip()}"))


def _model_info(request: BuildRequest) -> dict:
    return {
        "input_shape": list(request.input_shape),
        "dtype": request.input_dtype,
        "model": request.source,
        "recipe": request.recipe,
        "image_preprocessing": request.image_preprocessing,
    }


def _exported(request: BuildRequest, export_dir: Path) -> dict:
    """The export's record, checked against what the configuration asks for."""
    info_path = export_dir / EXPORT_INFO_FILE
    if not info_path.is_file() or not (export_dir / EXPORTED_MODEL_FILE).is_file():
        raise ConfigError(
            f"model {request.name!r}: no runtime export in {export_dir} ({EXPORTED_MODEL_FILE} + {EXPORT_INFO_FILE}); "
            "run `python -m model_artifacts.runtime_export` in the serving runtime's image first"
        )
    exported = json.loads(info_path.read_text())
    expected = {"model": request.source, "recipe": request.recipe, "input_shape": list(request.input_shape), "dtype": request.input_dtype}
    stale = [f"{key}: exported {exported.get(key)!r}, configured {value!r}" for key, value in expected.items() if exported.get(key) != value]
    if stale:
        raise ConfigError(f"model {request.name!r}: the runtime export in {export_dir} is stale ({'; '.join(stale)}); export again")
    return exported
