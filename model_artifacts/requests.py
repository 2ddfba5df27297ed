"""Which artifacts the configuration asks for: one per model, built for its serving runtime, and one per shadow
(serving.shadow), built for the shadow profile's. Torch-free."""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from config import AppConfig, ConfigError, ModelDeployment
from config.shadow import with_shadow
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
    """One request per model, plus one per shadow (serving.shadow: <name>.shadow, its profile's recipe and runtime);
    with `runtime_export_dir`, each takes <dir>/<name>/ from runtime_export.

    `only` names artifacts: a model's name selects its live artifact, <name>.shadow its shadow's.
    Weights paths in the config are relative to `weights_root` (the repository root).
    """
    # Every environment deploys the same model spec, so the first one names the runtime.
    deployments = [each for deployment in config.environments[0].models for each in with_shadow(deployment)]
    unknown = sorted(set(only or ()) - set(config.models) - {deployment.name for deployment in deployments})
    if unknown:
        raise ConfigError(f"--model {', '.join(unknown)}: no such model; configured: {', '.join(config.models)}")
    return [_request(deployment, runtime_export_dir, allow_newer_torch, weights_root)
            for deployment in deployments if not only or deployment.name in only]


def _request(deployment: ModelDeployment, runtime_export_dir: Optional[Path], allow_newer_torch: bool,
             weights_root: Path) -> BuildRequest:
    target, build = deployment.target, deployment.spec.build
    weights = Path(weights_root) / build.weights if build.weights else None
    if weights is not None and not weights.is_file():
        raise ConfigError(f"model {deployment.name!r}: build.weights = {build.weights!r}: no such file under {Path(weights_root).resolve()}")
    return BuildRequest(
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
