"""Can the serving runtime load what this build wrote? Torch-free: the CLI checks it before importing torch."""
import json
from pathlib import Path
from typing import Optional

from packaging.version import Version

from config import ConfigError

_READERS = Path(__file__).parent / "data" / "torchscript_readers.json"
FIX = (
    "build inside the runtime's own image (the pipeline's RuntimeExport step; locally `python -m "
    "model_artifacts.runtime_export` there, then `make artifacts RUNTIME_EXPORT=DIR`), or with torch=={runtime} pinned"
)


def max_readable_format_version(runtime_torch: str) -> Optional[int]:
    readers = json.loads(_READERS.read_text())["max_readable_format_version"]
    return readers.get(".".join(runtime_torch.split(".")[:2]))


def check_runtime_can_load(name: str, build_torch: str, runtime_torch: str, format_version: int, allow_newer_torch: bool) -> None:
    """Refuse an archive the runtime cannot read, and a newer build torch unless explicitly allowed."""
    fix = FIX.format(runtime=runtime_torch)
    readable = max_readable_format_version(runtime_torch)
    if readable is not None and format_version > readable:
        raise ConfigError(
            f"model {name!r}: torch {build_torch} wrote TorchScript archive format {format_version}, but the runtime's "
            f"torch {runtime_torch} reads at most format {readable}, so the endpoint could not load it; {fix}"
        )
    if Version(build_torch) > Version(runtime_torch) and not allow_newer_torch:
        raise ConfigError(
            f"model {name!r}: built with torch {build_torch}, newer than the runtime's torch {runtime_torch}, which may "
            f"not load everything it wrote; {fix}. To build anyway, set build.allow_newer_torch: true (or pass "
            "--allow-newer-torch): the manifest records it and synthesis warns"
        )


def check_aoti_package_torch(name: str, build_torch: str, runtime_torch: str) -> None:
    """An AOTInductor package calls into the torch that compiled it (its C++ ABI): only that release loads it."""
    if Version(build_torch).release[:3] != Version(runtime_torch).release[:3]:
        raise ConfigError(
            f"model {name!r}: recipe aoti compiled the package with torch {build_torch}, but the runtime runs torch "
            f"{runtime_torch}, and an AOTInductor package loads only in the torch release that compiled it; "
            + FIX.format(runtime=runtime_torch)
        )
