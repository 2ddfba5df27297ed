"""The second source document's MXNet SSD detector, deployed beside the classifier: same stacks, same checks."""
import json
import tarfile

import pytest
from aws_cdk.assertions import Template

from tests.conftest import SynthesizedApp, build_for, make_config

MXNET_EIA_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference-eia:1.4.1-cpu-py3"


@pytest.fixture(scope="module")
def both_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("both")
    config = make_config(root / "config", models=("image-classifier", "object-detector"))
    build_for(config, root / "artifacts")
    return SynthesizedApp(config, root / "artifacts", root / "out")


def _by_model(template, resource_type):
    return {k.split("Serving")[0]: v["Properties"] for k, v in template.find_resources(resource_type).items()}


def test_the_detector_gets_its_own_model_config_and_endpoint_with_the_sdk_mxnet_eia_image(both_models):
    template = both_models.template("prod", "Serving")
    models = _by_model(template, "AWS::SageMaker::Model")
    assert set(models) == {"ImageClassifier", "ObjectDetector"}
    detector = models["ObjectDetector"]["PrimaryContainer"]
    assert detector["Image"] == MXNET_EIA_IMAGE
    assert detector["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert "models/object-detector/" in json.dumps(detector["ModelDataUrl"])
    assert models["ObjectDetector"]["EnableNetworkIsolation"] is True  # weights ship in the artifact
    variant = _by_model(template, "AWS::SageMaker::EndpointConfig")["ObjectDetector"]["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["AcceleratorType"]) == ("ml.c5.xlarge", "ml.eia2.large")
    names = sorted(e["EndpointName"] for e in _by_model(template, "AWS::SageMaker::Endpoint").values())
    assert names == ["Prod-Serving-image-classifier", "Prod-Serving-object-detector"]
    # one artifact bucket, shared
    assert len(both_models.template("prod", "ArtifactStore").find_resources("AWS::S3::Bucket")) == 2  # + access logs


def test_the_detector_artifact_holds_the_network_written_by_the_runtimes_own_mxnet_and_its_handler(both_models):
    with tarfile.open(both_models.artifacts_dir / "object-detector" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["code/inference.py", "code/request_handling.py", "code/requirements.txt", "model-0000.params", "model-symbol.json"]
        symbol = json.loads(tar.extractfile("model-symbol.json").read())
    assert symbol["attrs"]["mxnet_version"] == ["int", 10401]  # written by MXNet 1.4.1, the EIA image's
    manifest = json.loads((both_models.artifacts_dir / "object-detector" / "manifest.json").read_text())
    assert manifest["target_runtime"] == {"framework": "mxnet", "framework_version": "1.4.1", "profile": "eia"}
    assert manifest["build_framework_version"] == "1.4.1" and manifest["recipe"] == "mxnet-symbol"
    # GluonCV built the graph in the build venv; the runtime checked it answers the same before writing it.
    assert manifest["graph_built_with"] == {"mxnet": "1.9.1", "gluoncv": "0.10.5.post0"}
    assert manifest["parity"]["checked_with"] == "1.4.1" and set(manifest["parity"]["max_abs_diff"]) == {"cid", "score", "bbox"}


def test_synthesis_stays_clean_warns_about_elastic_inference_and_not_about_the_mxnet_version(both_models):
    report = json.loads((both_models.outdir / "validation-report.json").read_text())
    assert all(p["violations"] == [] for p in report["pluginReports"])
    warnings = [str(e.data) for stage in both_models.stages.values() for c in stage.node.find_all()
                for e in c.node.metadata if e.type == "aws:cdk:warning"]
    assert any("'object-detector' uses Elastic Inference (ml.eia2.large on ml.c5.xlarge)" in w for w in warnings)
    assert not any("object-detector" in w and "built with" in w for w in warnings), warnings


def test_two_detector_builds_are_byte_identical(both_models, tmp_path):
    again = _build_detector(tmp_path)
    first = both_models.artifacts_dir / "object-detector" / "model.tar.gz"
    assert (tmp_path / "artifacts" / "object-detector" / "model.tar.gz").read_bytes() == first.read_bytes()
    assert again["sha256"] == json.loads((first.parent / "manifest.json").read_text())["sha256"]


def test_the_cpu_profile_builds_the_detector_with_mxnet_1_9_0(tmp_path):
    """gpu, cpu and serverless serve on the mxnet-inference:1.9.0 images: their MXNet writes the files."""
    manifest = _build_detector(tmp_path, profile="cpu")
    assert manifest["target_runtime"] == {"framework": "mxnet", "framework_version": "1.9.0", "profile": "cpu"}
    assert manifest["build_framework_version"] == "1.9.0" and manifest["parity"]["checked_with"] == "1.9.0"
    with tarfile.open(tmp_path / "artifacts" / "object-detector" / "model.tar.gz") as tar:
        assert json.loads(tar.extractfile("model-symbol.json").read())["attrs"]["mxnet_version"] == ["int", 10900]


def test_a_missing_runtime_venv_fails_the_detector_build_with_its_fix_before_building_anything(tmp_path, monkeypatch):
    import runtimes
    from config import ConfigError

    from model_artifacts import build

    monkeypatch.setattr(runtimes, "VENVS_DIR", tmp_path / "no-venvs")
    monkeypatch.setattr(build, "MXNET_PYTHON", tmp_path / "no-venv-mxnet" / "bin" / "python")  # checked after the runtime
    with pytest.raises(ConfigError, match=r"the eia-mxnet-1\.4\.1 runtime .* has no venv .*run `make runtimes`"):
        _build_detector(tmp_path)


def test_a_missing_build_venv_fails_the_detector_build_with_its_fix(tmp_path, monkeypatch):
    from config import ConfigError
    from model_artifacts import build

    monkeypatch.setattr(build, "MXNET_PYTHON", tmp_path / "no-venv-mxnet" / "bin" / "python")
    with pytest.raises(ConfigError, match=r"'object-detector' is an MXNet model: its graph is built with GluonCV in the MXNet build "
                                          r"venv, and .*/no-venv-mxnet/bin/python is missing; run `make setup-mxnet`"):
        _build_detector(tmp_path)


def _build_detector(root, profile=None):
    """Only the detector, built by the build step into root/artifacts; returns its manifest."""
    import yaml

    from config import load_config
    from model_artifacts.build import build_artifact
    from model_artifacts.requests import build_requests

    config = make_config(root / "config", models=("image-classifier", "object-detector"))
    if profile:
        path = config / "models" / "object-detector.yaml"
        model = yaml.safe_load(path.read_text())
        model["serving"]["profile"] = profile
        path.write_text(yaml.safe_dump(model))
    (request,) = build_requests(load_config(config), only=["object-detector"])
    return build_artifact(request, root / "artifacts" / request.name)


def test_the_pipeline_smoke_tests_the_detector_with_its_own_contract(both_models):
    pipeline = Template.from_stack(both_models.app.node.find_child("Pipeline"))
    projects = {k: json.loads(v["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"]
                for k, v in pipeline.find_resources("AWS::CodeBuild::Project").items() if "SmokeTest" in k}
    assert len(projects) == 2  # staging and prod: one smoke test each, for both endpoints
    for commands in projects.values():
        (command,) = commands
        stage = "Staging" if "Staging-" in command else "Prod"
        assert command.endswith(f"--endpoint-name {stage}-Serving-image-classifier --detector-endpoint-name {stage}-Serving-object-detector")
    exports = [json.loads(v["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"]
               for k, v in pipeline.find_resources("AWS::CodeBuild::Project").items() if "RuntimeExport" in k]
    assert exports == [[c for c in exports[0] if "--out build/runtime-export/image-classifier" in c]]  # MXNet: in the synth step


@pytest.mark.parametrize("change, message", [
    (lambda m: m["build"].update(model="example-resnet"), "framework: mxnet builds the GluonCV detector"),
    (lambda m: m["build"].update(recipe="optimized"), "remove build.recipe (PyTorch only)"),
    (lambda m: m["serving"]["profiles"]["eia"].update(framework_version="1.6.0"), "accepted: 1.3.0, 1.4.0, 1.4.1, 1.5.1, 1.7.0"),
])
def test_detector_config_errors_name_the_fix(tmp_path, change, message):
    import yaml

    from config import ConfigError, load_config

    config = make_config(tmp_path / "c", models=("image-classifier", "object-detector"))
    path = config / "models" / "object-detector.yaml"
    model = yaml.safe_load(path.read_text())
    change(model)
    path.write_text(yaml.safe_dump(model))
    with pytest.raises(ConfigError, match="object-detector.yaml") as raised:
        load_config(config)
    assert message in str(raised.value)
