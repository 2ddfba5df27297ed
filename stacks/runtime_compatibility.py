"""Synth-time warning when the artifact was built with a newer torch than the serving runtime has.

The build refuses that unless build.allow_newer_torch (or --allow-newer-torch) was set; the manifest
records the override and this warning keeps it visible in every synth and `cdk diff`."""
from aws_cdk import Annotations
from constructs import IConstruct
from packaging.version import Version

from config import ModelDeployment
from model_artifacts.manifest import BuiltArtifact


def warn_if_runtime_older(scope: IConstruct, deployment: ModelDeployment, artifact: BuiltArtifact) -> None:
    runtime = deployment.target.framework_version
    built = artifact.build_framework_version
    framework = "torch" if deployment.spec.framework == "pytorch" else "MXNet"
    if Version(built) > Version(runtime):
        Annotations.of(scope).add_warning_v2(
            "torch-newer-than-runtime",
            f"Model {deployment.name!r}: model.tar.gz was built with {framework} {built} but the "
            f"{deployment.target.image_uri} runtime has {framework} {runtime}, which may refuse to load it. Build the "
            f"artifact inside the runtime's own image (the pipeline does for PyTorch), or with {framework}=={runtime} "
            "pinned, before deploying.",
        )
