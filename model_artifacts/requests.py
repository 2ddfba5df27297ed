"""Which artifacts the configuration asks for: one per model, built for its serving runtime. Torch-free."""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from config import AppConfig, ConfigError
from runtimes import Runtime, runtime_for


@dataclass(frozen=True)
class BuildRequest:
    """What to build and for which serving runtime."""

    name: str
    source: str  # the factory (package.module:function) or the example model's name
    example: Optional[str]
    factory: Optional[str]
    weights: Optional[Path]
    input_shape: Sequence[int]
    input_dtype: str
    recipe: str
    target_framework: str
    target_framework_version: str  # also the runtime's torch
    target_profile: str
    image_preprocessing: dict  # read back by the handler for JPEG/PNG requests
    allow_newer_torch: bool = False
    # A TorchScript archive converted by the runtime's own torch (runtime_export); None: convert here.
    runtime_export: Optional[Path] = None


def runtime_of(request: BuildRequest) -> Runtime:
    """The local venv that mirrors the image this artifact is served by."""
    return runtime_for(request.target_framework, request.target_framework_version, request.target_profile, where=f"model {request.name!r}")


def build_requests(
    config: AppConfig,
    only: Optional[Sequence[str]] = None,
    runtime_export_dir: Optional[Path] = None,
    allow_newer_torch: bool = False,
    weights_root: Path = Path("."),
) -> List[BuildRequest]:
    """One request per model; with `runtime_export_dir`, each takes <dir>/<name>/ from runtime_export.

    Weights paths in the config are relative to `weights_root` (the repository root).
    """
    unknown = sorted(set(only or ()) - set(config.models))
    if unknown:
        raise ConfigError(f"--model {', '.join(unknown)}: no such model; configured: {', '.join(config.models)}")
    requests = []
    # Every environment deploys the same model spec, so the first one names the runtime.
    for deployment in config.environments[0].models:
        if only and deployment.name not in only:
            continue
        target, build = deployment.target, deployment.spec.build
        weights = Path(weights_root) / build.weights if build.weights else None
        if weights is not None and not weights.is_file():
            raise ConfigError(f"model {deployment.name!r}: build.weights = {build.weights!r}: no such file under {Path(weights_root).resolve()}")
        requests.append(
            BuildRequest(
                name=deployment.name,
                source=build.source,
                example=None if build.factory else build.source,
                factory=build.factory,
                weights=weights,
                input_shape=tuple(build.input_shape),
                input_dtype=build.input_dtype,
                recipe=target.recipe,
                target_framework=target.framework,
                target_framework_version=target.framework_version,
                target_profile=target.profile,
                image_preprocessing=build.image_preprocessing.model_dump(mode="json"),
                allow_newer_torch=allow_newer_torch or build.allow_newer_torch,
                # Only TorchScript is converted in the runtime's image; MXNet exports need GluonCV (make setup-mxnet).
                runtime_export=Path(runtime_export_dir) / deployment.name if runtime_export_dir and target.framework == "pytorch" else None,
            )
        )
    return requests
