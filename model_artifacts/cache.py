"""Content-addressed build cache: an unchanged rebuild is a no-op, any changed input rebuilds.

Torch-free, so the no-op path never pays for importing torch. The key covers the request (model,
recipe, shapes, runtime), the weights, the model's code (the factory's package, or the example
models), this build code, the handler, and the runtime's pinned requirements (its torch).

The key leaves out the model's name: the archive and its model_info never contain it (only
manifest.json does), so two models whose key is the same build the same bytes, and a batch build
converts them once (model_artifacts.build.build_all). The manifest records the name; a manifest is
only up to date for the model it names.
"""
import hashlib
import json
import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from model_artifacts.manifest import ARTIFACT_FILE, MANIFEST_FILE, handler_code
from model_artifacts.packaging import sha256_of
from model_artifacts.requests import BuildRequest, runtime_of

BUILD_CODE = Path(__file__).resolve().parent
# Fields that are not build inputs: the name (manifest only); weights and the runtime export are hashed by content.
_NOT_HASHED = ("name", "weights", "runtime_export")


class FileHashes:
    """sha256 of files, each read once per instance (one batch build): 100 models share the same build
    code, handler and runtime pins. A file whose size, mtime or inode changed since is hashed again."""

    def __init__(self):
        self._known: Dict[str, Tuple[Tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()
        self.files_read = 0  # for tests: how many files were actually hashed

    def __call__(self, path: Path) -> str:
        stat = os.stat(path)
        signature, name = (stat.st_size, stat.st_mtime_ns, stat.st_ino), os.fspath(path)
        known = self._known.get(name)
        if known is not None and known[0] == signature:
            return known[1]
        digest = sha256_of(path)
        with self._lock:
            self._known[name] = (signature, digest)
            self.files_read += 1
        return digest


def cache_key(request: BuildRequest, hashes: Optional[FileHashes] = None) -> str:
    """The build's content address: equal for two requests that differ only in their name."""
    hash_file = hashes or sha256_of
    digest = hashlib.sha256()
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(request).items() if k not in _NOT_HASHED}
    digest.update(json.dumps({"request": fields}, sort_keys=True).encode())
    for path in _input_files(request):
        digest.update(f"\0{path.name}\0{hash_file(path)}".encode())
    return digest.hexdigest()


def _input_files(request: BuildRequest) -> List[Path]:
    files = _build_code() + sorted(handler_code(request.target_framework).values())
    if request.target_framework == "mxnet":
        files.append(BUILD_CODE.parent / "constraints-mxnet.txt")  # the MXNet that builds it
    if not request.runtime_export:
        files.append(runtime_of(request).requirements)  # the runtime that converts it
    if request.factory:
        files += _package_sources(request.factory.partition(":")[0])
    if request.weights:
        files.append(request.weights)
    if request.runtime_export:
        files += sorted(p for p in request.runtime_export.glob("*") if p.is_file())
    return [f for f in files if f.is_file() and "__pycache__" not in f.parts]


def _build_code() -> List[Path]:
    return sorted(BUILD_CODE.rglob("*.py"))


def _package_sources(module: str) -> Iterable[Path]:
    """The factory's top-level package (or module) on sys.path, found without importing it."""
    top = module.split(".")[0]
    for entry in map(Path, sys.path or ["."]):
        package, single = entry / top, entry / f"{top}.py"
        if (package / "__init__.py").is_file() or package.is_dir():
            return sorted(package.rglob("*.py"))
        if single.is_file():
            return [single]
    return []


def up_to_date(request: BuildRequest, out_dir: Path, key: str) -> Optional[dict]:
    """The existing manifest when out_dir holds exactly what this key would build for this model, else None."""
    manifest = built_with(out_dir, key)
    return manifest if manifest is not None and manifest.get("name") == request.name else None


def built_with(out_dir: Path, key: str) -> Optional[dict]:
    """out_dir's manifest when its artifact is intact and was built from `key` (for any model name), else None."""
    manifest_path, artifact = out_dir / MANIFEST_FILE, out_dir / ARTIFACT_FILE
    if not manifest_path.is_file() or not artifact.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return None
    if manifest.get("cache_key") != key or manifest.get("sha256") != sha256_of(artifact):
        return None
    return manifest
