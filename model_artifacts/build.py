"""The build step: model -> TorchScript -> parity check -> model.tar.gz + manifest.json.

An unchanged rebuild is a no-op (model_artifacts.cache); an archive the serving runtime cannot
load is refused (model_artifacts.compatibility). `build_all` builds many models: up to `jobs` at
once (each conversion still in its own fresh interpreter), and models whose build inputs are the
same but for their name are converted once and the artifact copied to the others.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from config import ConfigError
from model_artifacts import torchscript
from model_artifacts.cache import FileHashes, built_with, cache_key, up_to_date
from model_artifacts.compatibility import check_aoti_package_torch, check_runtime_can_load
from model_artifacts.manifest import ARTIFACT_FILE, MANIFEST_FILE, handler_code
from model_artifacts.mxnet_runtime_export import PARAMS_FILE, SYMBOL_FILE
from model_artifacts.packaging import sha256_of, write_reproducible_tarball
from model_artifacts.progress import Reporter
from model_artifacts.requests import BuildRequest, runtime_of

# Kept free of torch: runtime_export (run as a subprocess) is the only module here that imports it.
EXPORTED_MODEL_FILE = "model.pt"  # runtime_export's output files
AOTI_MODEL_FILE = "model.pt2"  # recipe aoti's instead of model.pt
AOTI_RECIPE = "aoti"
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
    return _build_and_record(request, out_dir, key, reporter)


def _build_and_record(request: BuildRequest, out_dir: Path, key: str, reporter: Reporter, summary: bool = True) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / "model.pt"  # a working file, streamed into the tarball, then removed
    try:
        steps = MXNET_STEPS if request.target_framework == "mxnet" else STEPS
        with reporter.model(request.name, steps, summary=summary) as progress:
            manifest = _build(request, out_dir, archive, progress)
    finally:
        archive.unlink(missing_ok=True)
    manifest["cache_key"] = key
    _write_manifest(out_dir, manifest)
    return manifest


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ many models: in parallel, shared builds


def default_jobs() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Outcome:
    """One model of a batch build: its manifest, or why it failed."""

    request: BuildRequest
    out_dir: Path
    manifest: Optional[dict] = None
    how: str = ""  # up to date | built | shared
    shared_from: Optional[str] = None  # the model whose artifact was copied
    error: Optional[str] = None

    @property
    def name(self) -> str:
        return self.request.name


def build_all(requests: Sequence[BuildRequest], out_root: Path, jobs: Optional[int] = None,
              reporter: Optional[Reporter] = None) -> List[Outcome]:
    """Build every request into out_root/<name>/, up to `jobs` conversions at once; never raises for one model.

    Requests with the same cache key (the same build but for the name) form a group: an up-to-date member's
    artifact, or else the first member's fresh build, is copied to the members that need it, each with
    its own manifest. Returns one Outcome per request, in order; failed ones carry the reason."""
    reporter = reporter or Reporter(level="none")
    hashes = FileHashes()  # the build code, handler and pins are hashed once, not once per model
    outcomes = [Outcome(request, Path(out_root) / request.name) for request in requests]
    tally = _Tally(reporter, len(outcomes))
    groups: Dict[str, List[Outcome]] = {}
    for outcome in outcomes:
        try:
            key = cache_key(outcome.request, hashes)
        except Exception as error:  # noqa: BLE001 - one model's error must not lose the others
            tally.failed(outcome, _reason(error))
            continue
        groups.setdefault(key, []).append(outcome)
    work = list(groups.items())
    if work:
        with ThreadPoolExecutor(max_workers=max(1, min(jobs or default_jobs(), len(work))), thread_name_prefix="build") as pool:
            try:
                for future in [pool.submit(_build_group, key, members, reporter, tally) for key, members in work]:
                    future.result()
            except BaseException:  # Ctrl-C: start no more builds
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return outcomes


def _build_group(key: str, members: List[Outcome], reporter: Reporter, tally: "_Tally") -> None:
    source: Optional[Outcome] = None
    pending = []
    for member in members:
        try:
            member.manifest = up_to_date(member.request, member.out_dir, key)
        except Exception as error:  # noqa: BLE001
            tally.failed(member, _reason(error))
            continue
        if member.manifest is None:
            pending.append(member)
        else:
            member.how, source = "up to date", source or member
            tally.done(member)
    if not pending:
        return
    if source is None:
        source, started = pending.pop(0), time.perf_counter()
        try:
            source.manifest = _build_and_record(source.request, source.out_dir, key, reporter, summary=False)
        except Exception as error:  # noqa: BLE001
            tally.failed(source, _reason(error))
            for member in pending:
                tally.failed(member, f"model {member.name!r}: not built: the same build as {source.name!r}, which failed")
            return
        source.how = "built"
        tally.done(source, seconds=time.perf_counter() - started)
    shared = built_with(source.out_dir, key)  # read back once, checked intact, for all the copies
    for member in pending:
        try:
            if shared is None:
                raise ConfigError(f"model {member.name!r}: the shared artifact in {source.out_dir} changed during the build; build again")
            member.manifest = _copy_artifact(source, member, shared)
        except Exception as error:  # noqa: BLE001
            tally.failed(member, _reason(error))
            continue
        member.how, member.shared_from = "shared", source.name
        tally.done(member)


def _copy_artifact(source: Outcome, target: Outcome, manifest: dict) -> dict:
    """source's model.tar.gz and its manifest, renamed, in target's directory."""
    target.out_dir.mkdir(parents=True, exist_ok=True)
    copy = target.out_dir / f".{ARTIFACT_FILE}.copy"
    try:
        shutil.copyfile(source.out_dir / ARTIFACT_FILE, copy)
        os.replace(copy, target.out_dir / ARTIFACT_FILE)
    finally:
        copy.unlink(missing_ok=True)
    manifest = {**manifest, "name": target.name}
    _write_manifest(target.out_dir, manifest)
    return manifest


def _reason(error: Exception) -> str:
    if isinstance(error, (ConfigError, OSError)):
        return str(error)
    return f"{type(error).__name__}: {error}"  # a bug here; still reported per model


class _Tally:
    """The batch's one line per model, numbered as models finish: `[k/N] model-007 built in 2.1s (sha256 ...)`."""

    def __init__(self, reporter: Reporter, total: int):
        self.reporter, self.total, self.finished = reporter, total, 0
        self._lock = threading.Lock()

    def done(self, outcome: Outcome, seconds: Optional[float] = None) -> None:
        sha = outcome.manifest["sha256"][:12]
        how = {
            "up to date": f"up to date (sha256 {sha})",
            "built": f"built in {seconds or 0:.1f}s (sha256 {sha})",
            "shared": f"built: the same build as {outcome.shared_from}, copied (sha256 {sha})",
        }[outcome.how]
        self._line(outcome, how)

    def failed(self, outcome: Outcome, reason: str) -> None:
        outcome.error = reason
        first_line = (reason.splitlines() or [""])[0]
        self._line(outcome, "FAILED: " + first_line.removeprefix(f"model {outcome.name!r}: "))

    def _line(self, outcome: Outcome, message: str) -> None:
        with self._lock:
            self.finished += 1
            self.reporter.say(f"[{self.finished}/{self.total}] {outcome.name} {message}", level="summary")


def _build(request: BuildRequest, out_dir: Path, archive: Path, progress) -> dict:
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as scratch:
        if request.target_framework == "mxnet":
            model_files, build_version, details = _export_mxnet(request, Path(scratch), progress)
        else:
            model_files, build_version, details = _export_pytorch(request, Path(scratch), archive, progress)
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


def _export_pytorch(request: BuildRequest, scratch: Path, archive: Path, progress):
    """model.pt converted by this torch (or the runtime's, from --runtime-export), normalized, checked loadable.
    Recipe aoti: model.pt2 (already reproducible: runtime_export fixes its paths and dates) and model_info.json."""
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
    if request.recipe == AOTI_RECIPE:
        with progress.step("add the model info beside the package"):
            info = scratch / MODEL_INFO_FILE
            info.write_text(json.dumps(_model_info(request), sort_keys=True))
        check_aoti_package_torch(request.name, exported["torch_version"], request.target_framework_version)
        details = {"parity": {**exported["parity"], "checked_with": exported["torch_version"]}}
        return {AOTI_MODEL_FILE: export_dir / AOTI_MODEL_FILE, MODEL_INFO_FILE: info}, exported["torch_version"], details
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
    model_file = AOTI_MODEL_FILE if request.recipe == AOTI_RECIPE else EXPORTED_MODEL_FILE
    if not info_path.is_file() or not (export_dir / model_file).is_file():
        raise ConfigError(
            f"model {request.name!r}: no runtime export in {export_dir} ({model_file} + {EXPORT_INFO_FILE}); "
            "run `python -m model_artifacts.runtime_export` in the serving runtime's image first"
        )
    exported = json.loads(info_path.read_text())
    expected = {"model": request.source, "recipe": request.recipe, "input_shape": list(request.input_shape), "dtype": request.input_dtype}
    stale = [f"{key}: exported {exported.get(key)!r}, configured {value!r}" for key, value in expected.items() if exported.get(key) != value]
    if stale:
        raise ConfigError(f"model {request.name!r}: the runtime export in {export_dir} is stale ({'; '.join(stale)}); export again")
    return exported
