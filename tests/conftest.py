"""Shared fixtures: a small copy of the real config, tiny built artifacts, synthesized apps."""
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("CDK_DISABLE_VERSION_CHECK", "1")

TINY_BUILD = {"model": "example-resnet-tiny", "input_shape": [1, 3, 64, 64]}


def make_config(directory: Path, model_changes: Callable[[dict], None] = lambda m: None,
                env_changes: Dict[str, Callable[[dict], None]] = None, models=("image-classifier",)) -> Path:
    """Copy config/ into `directory` with the tiny example classifier (model_changes edit it), then the environments.

    Only `models` are kept: most tests are about the classifier; the detector has its own tests."""
    shutil.copytree(REPO / "config", directory)
    for path in (directory / "models").glob("*.yaml"):
        if path.stem not in models:
            path.unlink()
    model_file = directory / "models" / "image-classifier.yaml"
    if model_file.exists():
        model = yaml.safe_load(model_file.read_text())
        model["build"].update(TINY_BUILD)
        model_changes(model)
        model_file.write_text(yaml.safe_dump(model))
    for name, change in (env_changes or {}).items():
        env_file = directory / "environments" / f"{name}.yaml"
        env = yaml.safe_load(env_file.read_text())
        change(env)
        env_file.write_text(yaml.safe_dump(env))
    return directory


def build_for(config_dir: Path, out_dir: Path) -> Dict[str, dict]:
    from config import load_config
    from model_artifacts.build import build_artifact
    from model_artifacts.requests import build_requests

    return {r.name: build_artifact(r, out_dir / r.name) for r in build_requests(load_config(config_dir))}


class SynthesizedApp:
    """An in-process synthesis (same code path as app.py) with its templates by stage and stack."""

    def __init__(self, config_dir: Path, artifacts_dir: Path, outdir: Path):
        import aws_cdk as cdk

        from config import load_config
        from stacks.application import add_stages

        self.config = load_config(config_dir)
        cdk_json = json.loads((REPO / "cdk.json").read_text())
        # What the CLI adds from cdk.json's top-level settings (pathMetadata defaults on; cfn-lint reads it).
        context = {**cdk_json["context"], "aws:cdk:enable-path-metadata": True,
                   "aws:cdk:enable-asset-metadata": cdk_json.get("assetMetadata", True)}
        self.app = cdk.App(outdir=str(outdir), context=context)
        self.stages = add_stages(self.app, self.config, artifacts_dir=artifacts_dir, config_dir=config_dir)
        self.assembly = self.app.synth()
        self.outdir = outdir
        self.artifacts_dir = artifacts_dir

    def template(self, env: str, stack: str) -> dict:
        from aws_cdk.assertions import Template

        stage = self.stages[env]
        return Template.from_stack(getattr(stage, "artifact_store" if stack == "ArtifactStore" else "serving"))

    def template_files(self):
        return sorted(self.outdir.glob("assembly-*/*.template.json"))


@pytest.fixture(scope="session")
def eia_config(tmp_path_factory) -> Path:
    return make_config(tmp_path_factory.mktemp("eia") / "config")


@pytest.fixture(scope="session")
def eia_artifacts(eia_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eia-artifacts")
    build_for(eia_config, out)
    return out


@pytest.fixture(scope="session")
def eia_app(eia_config, eia_artifacts, tmp_path_factory) -> SynthesizedApp:
    return SynthesizedApp(eia_config, eia_artifacts, tmp_path_factory.mktemp("eia-out"))


@pytest.fixture(scope="session")
def gpu_app(tmp_path_factory) -> SynthesizedApp:
    """The one-line switch: serving.profile: gpu, everything else as shipped."""
    root = tmp_path_factory.mktemp("gpu")
    config = make_config(root / "config", lambda m: m["serving"].update(profile="gpu"))
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


@pytest.fixture(scope="session")
def async_app(tmp_path_factory) -> SynthesizedApp:
    """The classifier on the async profile, scaled to zero in dev and staging, capturing data in every environment
    (prod does as shipped): the async infrastructure, its smoke test's grants and data capture beside its queue."""
    def scale_to_zero_and_capture(env: dict) -> None:
        env.setdefault("scaling", {}).update(min_instances=0)
        env["data_capture"] = {"enabled": True}

    root = tmp_path_factory.mktemp("async")
    config = make_config(root / "config", lambda m: m["serving"].update(profile="async"),
                         env_changes={"dev": scale_to_zero_and_capture, "staging": scale_to_zero_and_capture})
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


# Every serving runtime the classifier's configuration can select: case -> (runtime, the one-line edit).
# serverless serves the cpu artifact (same recipe, same image) with another container setting.
SERVING_CASES: Dict[str, tuple] = {
    "eia-1.5.1": ("eia-pytorch-1.5.1", lambda m: None),
    "eia-1.3.1": ("eia-pytorch-1.3.1", lambda m: m["serving"]["profiles"]["eia"].update(framework_version="1.3.1")),
    "gpu": ("pytorch-2.6.0", lambda m: m["serving"].update(profile="gpu")),
    "cpu": ("pytorch-2.6.0", lambda m: m["serving"].update(profile="cpu")),
    "serverless": ("pytorch-2.6.0", lambda m: m["serving"].update(profile="serverless")),
    # The torch.export + AOTInductor package (model.pt2) instead of TorchScript, on the cpu profile.
    "cpu-aoti": ("pytorch-2.6.0", lambda m: (m["serving"].update(profile="cpu"), m.setdefault("build", {}).update(recipe="aoti"))),
}


def _with_test_limits(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    """The case's edit, plus serving.limits that differ from every default (tests/payloads.py SERVING_TEST_LIMITS)."""
    from tests.payloads import SERVING_TEST_LIMITS

    def change(model: dict) -> None:
        edit(model)
        model["serving"]["limits"] = dict(SERVING_TEST_LIMITS)

    return change


@dataclass(frozen=True)
class ServingCase:
    """The tiny classifier built (in its runtime's venv) for one serving case."""

    name: str
    runtime: "object"  # runtimes.Runtime
    config_dir: Path
    artifact_dir: Path  # model.tar.gz + manifest.json
    model_dir: Path  # model.tar.gz extracted, as SageMaker does into /opt/ml/model

    @property
    def manifest(self) -> dict:
        return json.loads((self.artifact_dir / "manifest.json").read_text())

    def container_environment(self) -> Dict[str, str]:
        from config import load_config
        from config.container import container_environment

        return container_environment(next(d for d in load_config(self.config_dir).environments[0].models if d.name == "image-classifier"))


@pytest.fixture(scope="session")
def serving_case(tmp_path_factory) -> Callable[[str], ServingCase]:
    """serving_case("eia-1.3.1"): built once per session. A missing runtime venv fails with its fix."""
    from runtimes import RUNTIMES

    built: Dict[str, ServingCase] = {}

    def get(name: str) -> ServingCase:
        if name not in built:
            runtime_name, edit = SERVING_CASES[name]
            runtime = RUNTIMES[runtime_name]
            runtime.require()
            root = tmp_path_factory.mktemp(f"case-{name}")
            config = make_config(root / "config", _with_test_limits(edit))
            build_for(config, root / "artifacts")
            model_dir = root / "model"
            with tarfile.open(root / "artifacts" / "image-classifier" / "model.tar.gz") as tar:
                tar.extractall(model_dir, filter="data")
            built[name] = ServingCase(name, runtime, config, root / "artifacts" / "image-classifier", model_dir)
        return built[name]

    return get
