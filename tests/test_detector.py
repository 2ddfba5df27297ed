"""The second source document's MXNet SSD detector, deployed beside the classifier: same stacks, same checks."""
import json

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


def test_the_detector_artifact_holds_the_exported_network_and_its_handler(both_models):
    import tarfile

    with tarfile.open(both_models.artifacts_dir / "object-detector" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["code/inference.py", "code/requirements.txt", "model-0000.params", "model-symbol.json"]
    manifest = json.loads((both_models.artifacts_dir / "object-detector" / "manifest.json").read_text())
    assert manifest["target_runtime"] == {"framework": "mxnet", "framework_version": "1.4.1", "profile": "eia"}
    assert manifest["build_framework_version"] == "1.9.1" and manifest["recipe"] == "mxnet-symbol"


def test_synthesis_stays_clean_and_warns_about_both_runtimes(both_models):
    report = json.loads((both_models.outdir / "validation-report.json").read_text())
    assert all(p["violations"] == [] for p in report["pluginReports"])
    warnings = [str(e.data) for stage in both_models.stages.values() for c in stage.node.find_all()
                for e in c.node.metadata if e.type == "aws:cdk:warning"]
    assert any("'object-detector' uses Elastic Inference (ml.eia2.large on ml.c5.xlarge)" in w for w in warnings)
    assert any("built with MXNet 1.9.1" in w and "MXNet 1.4.1" in w for w in warnings)


def test_the_pipeline_smoke_tests_the_detector_with_its_own_contract(both_models):
    pipeline = Template.from_stack(both_models.app.node.find_child("Pipeline"))
    projects = {k: json.loads(v["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"]
                for k, v in pipeline.find_resources("AWS::CodeBuild::Project").items() if "SmokeTest" in k}
    detector = [c for k, c in projects.items() if "objectdetector" in k.lower()]
    classifier = [c for k, c in projects.items() if "imageclassifier" in k.lower()]
    assert len(detector) == 2 and all(c[0].endswith("--detector") for c in detector)  # staging and prod
    assert classifier and not any("--detector" in c[0] for c in classifier)
    exports = [k for k in pipeline.find_resources("AWS::CodeBuild::Project") if "RuntimeExport" in k]
    assert exports and not any("objectdetector" in k.lower() for k in exports)  # MXNet is exported in the synth step


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
