"""Content-addressed build cache: an unchanged rebuild is a no-op, any changed input rebuilds.

Torch-free, so the no-op path never pays for importing torch. The key covers the request (model,
recipe, shapes, runtime), the weights, the model's code (the factory's package, or the example
models), this build code, the handler, and the runtime's pinned requirements (its torch).
"""
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, List, Optional

from model_artifacts.manifest import ARTIFACT_FILE, MANIFEST_FILE, handler_code
from model_artifacts.packaging import sha256_of
from model_artifacts.requests import BuildRequest, runtime_of

BUILD_CODE = Path(__file__).resolve().parent


def cache_key(request: BuildRequest) -> str:
    digest = hashlib.sha256()
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(request).items() if k not in ("weights", "runtime_export")}
    digest.update(json.dumps({"request": fields}, sort_keys=True).encode())
    for path in _input_files(request):
        digest.update(f"\0{path.name}\0{sha256_of(path)}".encode())
    return digest.hexdigest()


def _input_files(request: BuildRequest) -> List[Path]:
    files = sorted(BUILD_CODE.rglob("*.py")) + sorted(handler_code(request.target_framework).values())
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
    """The existing manifest when out_dir holds exactly what this key would build, else None."""
    manifest_path, artifact = out_dir / MANIFEST_FILE, out_dir / ARTIFACT_FILE
    if not manifest_path.is_file() or not artifact.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("cache_key") != key or manifest.get("sha256") != sha256_of(artifact):
        return None
    return manifest
