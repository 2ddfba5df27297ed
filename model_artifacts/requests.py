"""Which artifacts the configuration asks for: one per model, built for its serving runtime."""
from pathlib import Path
from typing import List, Optional, Sequence

from config import AppConfig, ConfigError
from model_artifacts.build import BuildRequest


def build_requests(config: AppConfig, only: Optional[Sequence[str]] = None, runtime_export_dir: Optional[Path] = None) -> List[BuildRequest]:
    """One request per model; with `runtime_export_dir`, each takes <dir>/<name>/ from runtime_export."""
    unknown = sorted(set(only or ()) - set(config.models))
    if unknown:
        raise ConfigError(f"--model {', '.join(unknown)}: no such model; configured: {', '.join(config.models)}")
    requests = []
    # Every environment deploys the same model spec, so the first one names the runtime.
    for deployment in config.environments[0].models:
        if only and deployment.name not in only:
            continue
        target = deployment.target
        requests.append(
            BuildRequest(
                name=deployment.name,
                model=deployment.spec.build.model,
                input_shape=tuple(deployment.spec.build.input_shape),
                recipe=target.recipe,
                target_framework=target.framework,
                target_framework_version=target.framework_version,
                target_profile=target.profile,
                image_preprocessing=deployment.spec.build.image_preprocessing.model_dump(mode="json"),
                runtime_export=Path(runtime_export_dir) / deployment.name if runtime_export_dir else None,
            )
        )
    return requests
