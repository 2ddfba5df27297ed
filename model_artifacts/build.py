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
from model_artifacts.manifest import ARTIFACT_FILE, MANIFEST_FILE, handler_code
from model_artifacts.mxnet_runtime_export import PARAMS_FILE, SYMBOL_FILE
from model_artifacts.packaging import sha256_of, write_reproducible_tarball
from model_artifacts.progress import Reporter
from model_artifacts.requests import BuildRequest, runtime_of

# Kept free of torch: runtime_export (run as a subprocess) is the only module here that imports it.
EXPORTED_MODEL_FILE = "model.pt"  # runtime_export's output files
EXPORT_INFO_FILE = "export.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
# The detector is built in two steps: GluonCV builds the graph in its own venv (make setup-mxnet; MXNet needs
# numpy < 1.24), then the serving runtime's own MXNet (runtimes/) checks it and writes the files it serves.
# MXNET_PYTHON points elsewhere, e.g. make diff's temporary worktree to this checkout's venv.
MXNET_PYTHON = Path(os.environ.get("MXNET_PYTHON") or REPO_ROOT / ".venv-mxnet" / "bin" / "python")
MXNET_MODEL_FILES = (SYMBOL_FILE, PARAMS_FILE)
MXNET_GRAPH_DIR = "graph"  # mxnet_export's output (build venv) in the scratch directory
MXNET_RUNTIME_DIR = "runtime"  # mxnet_runtime_export's output (serving runtime): what ships

MODEL_INFO_FILE = "model_info.json"  # read back by inference_src/inference.py
STEPS = 4  # convert + parity, normalize, package, manifest
MXNET_STEPS = 4  # build the graph, re-export + parity in the runtime, package, manifest


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
        with reporter.model(request.name, MXNET_STEPS if request.target_framework == "mxnet" else STEPS) as progress:
            manifest = _build(request, out_dir, archive, progress)
    finally:
        archive.unlink(missing_ok=True)
    manifest["cache_key"] = key
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _build(request: BuildRequest, out_dir: Path, archive: Path, progress) -> dict:
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as scratch:
        if request.target_framework == "mxnet":
            model_files, build_version, details = _export_mxnet(request, Path(scratch), progress)
        else:
            model_files, build_version, details = _export_torchscript(request, Path(scratch), archive, progress)
        files = {**model_files, **handler_code(request.target_framework)}
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
                "build_framework_version": build_version,
                "runtime_framework_version": request.target_framework_version,
                "allow_newer_torch": request.allow_newer_torch,
                "target_runtime": {
                    "framework": request.target_framework,
                    "framework_version": request.target_framework_version,
                    "profile": request.target_profile,
                },
                **details,
            }


def _export_torchscript(request: BuildRequest, scratch: Path, archive: Path, progress):
    """model.pt converted by this torch (or the runtime's, from --runtime-export), normalized, checked loadable."""
    if request.runtime_export:
        export_dir = request.runtime_export
        with progress.step(f"take the runtime's TorchScript ({request.recipe}) from {export_dir}"):
            exported = _exported(request, export_dir)
    else:
        export_dir = scratch
        runtime = runtime_of(request)
        with progress.step(f"load {request.source}, convert ({request.recipe}), check parity in the {runtime.name} runtime"):
            _export_in_the_runtime(request, runtime.require(), export_dir)
            exported = _exported(request, export_dir)
    with progress.step("normalize the archive (no debug records or local paths) and add the model info"):
        extra_files = {MODEL_INFO_FILE: json.dumps(_model_info(request), sort_keys=True)}
        torchscript.normalize(export_dir / EXPORTED_MODEL_FILE, archive, extra_files)
    format_version = torchscript.archive_format_version(archive)
    check_runtime_can_load(request.name, exported["torch_version"], request.target_framework_version, format_version, request.allow_newer_torch)
    details = {"parity": {**exported["parity"], "checked_with": exported["torch_version"]}, "torchscript_archive_format_version": format_version}
    return {"model.pt": archive}, exported["torch_version"], details


def _export_mxnet(request: BuildRequest, scratch: Path, progress):
    """The GluonCV detector: GluonCV builds its graph in .venv-mxnet (mxnet_export), then the serving runtime's
    own MXNet loads it, checks it answers the build's cid/score/bbox and writes the files the endpoint loads
    (mxnet_runtime_export, in the runtime's venv). The build framework version is the runtime's MXNet."""
    runtime = runtime_of(request)
    runtime_python = runtime.require()  # fails first, with the fix, before the slower graph build
    if not MXNET_PYTHON.exists():
        raise ConfigError(
            f"model {request.name!r} is an MXNet model: its graph is built with GluonCV in the MXNet build venv, and "
            f"{MXNET_PYTHON} is missing; run `make setup-mxnet`"
        )
    graph, out = scratch / MXNET_GRAPH_DIR, scratch / MXNET_RUNTIME_DIR
    command = [str(MXNET_PYTHON), "-m", "model_artifacts.mxnet_export", "--model", request.source, "--out", str(graph)]
    if request.weights:
        command += ["--weights", str(Path(request.weights).resolve())]
    with progress.step(f"build {request.source} with GluonCV (MXNet in {MXNET_PYTHON.parent.parent.name})"):
        _run_export(request, command, python_path=[str(REPO_ROOT)])  # nothing from this venv's numpy 2
        built = json.loads((graph / EXPORT_INFO_FILE).read_text())
    command = [str(runtime_python), "-m", "model_artifacts.mxnet_runtime_export", "--graph", str(graph), "--out", str(out)]
    with progress.step(f"load, check parity and write the model files with MXNet {runtime.framework_version} ({runtime.name} runtime)"):
        _run_export(request, command, python_path=[str(REPO_ROOT)])
        exported = json.loads((out / EXPORT_INFO_FILE).read_text())
    if exported["mxnet_version"] != runtime.framework_version:
        raise ConfigError(
            f"model {request.name!r}: the {runtime.name} runtime's venv ({runtime.venv}) has MXNet {exported['mxnet_version']}, "
            f"not {runtime.framework_version}; rebuild it: `make setup-runtimes RUNTIMES={runtime.name}`"
        )
    details = {
        "parity": {**exported["parity"], "checked_with": exported["mxnet_version"]},
        "graph_built_with": {"mxnet": built["mxnet_version"], "gluoncv": built["gluoncv_version"]},
    }
    return {name: out / name for name in MXNET_MODEL_FILES}, exported["mxnet_version"], details


def _export_in_the_runtime(request: BuildRequest, python: Path, out: Path) -> None:
    """runtime_export in the serving runtime's own venv: its Python and its torch write the archive the
    endpoint loads. A new process per model, too: TorchScript mangles the names of classes it has compiled
    before in the same process, which would make a second build in one process differ."""
    source = ["--factory", request.factory] if request.factory else ["--model", request.example]
    if request.weights:
        source += ["--weights", str(Path(request.weights).resolve())]
    command = [str(python), "-m", "model_artifacts.runtime_export", *source, "--recipe", request.recipe,
               "--input-shape", *map(str, request.input_shape), "--dtype", request.input_dtype, "--out", str(out.resolve())]
    # What this process imports factories from (the repository, the working directory, PYTHONPATH), but not
    # this interpreter's own library and site-packages: they belong to another Python.
    own = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    imports_from = [p or os.getcwd() for p in sys.path if not (p and p.startswith(own))]
    _run_export(request, command, python_path=[str(REPO_ROOT), *imports_from])


def _run_export(request: BuildRequest, command, python_path) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join(python_path)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
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
