"""Read a built artifact's manifest and check that it still matches the configuration.

Imported by the CDK app, so it must not import torch.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from config import ConfigError, ModelDeployment
from config.shadow import shadow_deployment

ARTIFACT_FILE = "model.tar.gz"
MANIFEST_FILE = "manifest.json"
HANDLER_FILE = Path(__file__).resolve().parent.parent / "inference_src" / "inference.py"
# The MXNet detector's handler (the second source document), shipped the same way as code/inference.py.
MXNET_HANDLER_FILE = HANDLER_FILE.parent / "mxnet_ssd" / "inference.py"
HANDLER_FILES = {"pytorch": HANDLER_FILE, "mxnet": MXNET_HANDLER_FILE}
# Both handlers import it; the toolkit puts code/ on sys.path.
SHARED_HANDLER_FILE = HANDLER_FILE.parent / "request_handling.py"


def handler_code(framework: str) -> Dict[str, Path]:
    """The archive's code/ folder for a framework: archive name -> source file."""
    handler = HANDLER_FILES[framework]
    return {
        "code/inference.py": handler,
        "code/request_handling.py": SHARED_HANDLER_FILE,
        "code/requirements.txt": handler.parent / "requirements.txt",
    }
REBUILD_HINT = "run `make artifacts` (python -m model_artifacts build)"


@dataclass(frozen=True)
class BuiltArtifact:
    directory: Path
    manifest: dict

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]

    @property
    def build_framework_version(self) -> str:
        """The torch (or MXNet) that wrote the model files."""
        return self.manifest["build_framework_version"]


def load_built_artifact(artifacts_dir: Path, deployment: ModelDeployment) -> BuiltArtifact:
    directory = Path(artifacts_dir) / deployment.name
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file() or not (directory / ARTIFACT_FILE).is_file():
        raise ConfigError(f"model {deployment.name!r}: no built artifact in {directory}; {REBUILD_HINT}")
    manifest = json.loads(manifest_path.read_text())
    target = deployment.target
    expected = {
        "recipe": target.recipe,
        "framework_version": target.framework_version,
        "model": deployment.spec.build.source,
        "dtype": deployment.spec.build.input_dtype,
        "input_shape": list(deployment.spec.build.input_shape),
        "image_preprocessing": deployment.spec.build.image_preprocessing.model_dump(mode="json"),
    }
    actual = {
        "recipe": manifest.get("recipe"),
        "framework_version": manifest.get("target_runtime", {}).get("framework_version"),
        "model": manifest.get("model"),
        "dtype": manifest.get("dtype"),
        "input_shape": manifest.get("input_shape"),
        "image_preprocessing": manifest.get("image_preprocessing"),
    }
    stale = [f"{key}: built {actual[key]!r}, configured {expected[key]!r}" for key in expected if actual[key] != expected[key]]
    for name, source in handler_code(deployment.spec.framework).items():
        if manifest.get("files", {}).get(name) != hashlib.sha256(source.read_bytes()).hexdigest():
            stale.append(f"{name} ({source.name}) changed since the build")
    if stale:
        raise ConfigError(f"model {deployment.name!r}: the built artifact is stale ({'; '.join(stale)}); {REBUILD_HINT}")
    return BuiltArtifact(directory=directory, manifest=manifest)


def load_built_shadow_artifact(artifacts_dir: Path, deployment: ModelDeployment) -> Optional[BuiltArtifact]:
    """The shadow's artifact (serving.shadow), built for its own profile into <artifacts_dir>/<name>.shadow/ and checked
    against the shadow's target like the live one; None without a shadow."""
    if deployment.shadow is None:
        return None
    return load_built_artifact(artifacts_dir, shadow_deployment(deployment))
