"""Big models deploy (issue 13, item 5): a 5 GiB model.tar.gz synthesizes to a path that deploys.

The old path (BucketDeployment) zipped the tarball and unpacked it in a Lambda function's 512 MB /tmp. The new one:
the tarball is a file asset (published as it is by the CLI or the pipeline's Assets stage, streamed in parts), then
one server-side S3 CopyObject puts it under models/<name>/<sha256>/model.tar.gz; the Lambda function that sends the
request never holds the file. CopyObject copies at most 5 GiB, which synthesis enforces. Through CDK Pipelines the
Assets stage publishes it from the synth output, and the CloudFormation deploy actions (input capped at 256 MB) read a
copy of the assembly without the staged assets, so the pipeline deploys it too.

The 5 GiB artifact is a sparse file of zeros (no disk blocks; its sha256 is computed over zeros in memory). CDK
stages assets by copying them into cdk.out; the app does so once per sha256 and skips a staged file of the right
size, so the big case is pre-staged with a hard link and proves the synthesized path without writing 5 GiB. The copy
itself is proved on a small file.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from config import ConfigError, ModelDeployment, load_config
from model_artifacts.manifest import ARTIFACT_FILE, MANIFEST_FILE, BuiltArtifact, handler_code, load_built_artifact
from model_artifacts.packaging import sha256_of
from stacks.artifact_store_stack import ArtifactStoreStack
from stacks.constructs.model_artifact_upload import (
    COPY_OBJECT_MAX_BYTES,
    COPY_RESOURCE_TYPE,
    ModelArtifactUpload,
    cdk_asset_hash,
    check_copy_size,
    stage_artifact,
    staged_path_for,
)
from stacks.pipeline_steps import ASSEMBLY_DIR, CLOUDFORMATION_INPUT_MAX_BYTES, TEMPLATES_ONLY_COMMAND, TEMPLATES_ONLY_DIR
from tests.conftest import REPO, SynthesizedApp, make_config

GIB = 1024 ** 3
MODEL = "image-classifier"
ACCOUNT, REGION = "111111111111", "us-east-1"
# Published to a bootstrap bucket, then copied server-side; a Lambda function that held the file would show up as one
# of these (BucketDeployment's awscli layer, a bigger /tmp).
HOLDS_THE_FILE = ("Custom::CDKBucketDeployment", "AWS::Lambda::LayerVersion")


# ------------------------------------------------------------ the stand-in: a sparse artifact of any size


def zeros_sha256(size_bytes: int) -> str:
    digest, chunk = hashlib.sha256(), bytes(16 * 1024 * 1024)
    whole, rest = divmod(size_bytes, len(chunk))
    for _ in range(whole):
        digest.update(chunk)
    digest.update(chunk[:rest])
    return digest.hexdigest()


def sparse_file(path: Path, size_bytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        stream.truncate(size_bytes)
    if path.stat().st_blocks * 512 > 1024 * 1024:  # never write gigabytes by accident
        path.unlink()
        pytest.fail(f"{path.parent} does not keep sparse files sparse; run the tests on a filesystem that does (ext4, xfs, tmpfs)")
    return path


def write_stand_in(deployment: ModelDeployment, out_dir: Path, size_bytes: int) -> BuiltArtifact:
    """model.tar.gz (sparse zeros) + a manifest that load_built_artifact accepts for `deployment`. Not a model."""
    sparse_file(out_dir / ARTIFACT_FILE, size_bytes)
    target, build = deployment.target, deployment.spec.build
    manifest = {
        "name": deployment.name, "artifact": ARTIFACT_FILE, "sha256": zeros_sha256(size_bytes), "size_bytes": size_bytes,
        "files": {name: sha256_of(path) for name, path in sorted(handler_code(deployment.spec.framework).items())},
        "model": build.source, "recipe": target.recipe, "input_shape": list(build.input_shape), "dtype": build.input_dtype,
        "image_preprocessing": build.image_preprocessing.model_dump(mode="json"),
        "build_framework_version": target.framework_version,
        "target_runtime": {"framework": deployment.spec.framework, "framework_version": target.framework_version},
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return load_built_artifact(out_dir.parent, deployment)


# ------------------------------------------------------------ the whole app with a 5 GiB model


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    config = make_config(root / "config")
    deployment = next(d for d in load_config(config).environment("dev").models if d.name == MODEL)
    artifact = write_stand_in(deployment, root / "artifacts" / MODEL, COPY_OBJECT_MAX_BYTES)
    outdir = root / "out"
    staged = staged_path_for(artifact.sha256, outdir)
    staged.parent.mkdir(parents=True)
    os.link(artifact.directory / ARTIFACT_FILE, staged)  # staged already: synthesis must not copy 5 GiB
    app = SynthesizedApp(config, root / "artifacts", outdir)  # cdk-nag runs in synth: any finding fails here
    yield app, artifact, staged
    for path in (staged, artifact.directory / ARTIFACT_FILE):
        path.unlink(missing_ok=True)


def _asset_manifest(stage, stack) -> dict:
    return json.loads((Path(stage.outdir) / f"{stack.artifact_id}.assets.json").read_text())


def _only(template: Template, resource_type: str):
    found = template.find_resources(resource_type)
    assert len(found) == 1, found
    return next(iter(found.items()))


def _copy_call(resource: dict, event: str) -> dict:
    """The AwsCustomResource call, with the artifact bucket's name (an import) shown as <bucket>."""
    parts = resource["Properties"][event]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "<bucket>" for p in parts))


def test_a_5_gib_artifact_is_a_file_asset_published_as_it_is(big):
    app, artifact, staged = big
    assert artifact.sha256 == zeros_sha256(5 * GIB) and (artifact.directory / ARTIFACT_FILE).stat().st_size == 5 * GIB
    asset_hash = cdk_asset_hash(artifact.sha256)  # from the manifest's sha256 alone: the same build, the same asset
    for stage in app.stages.values():
        entry = _asset_manifest(stage, stage.serving)["files"][asset_hash]
        assert entry["source"] == {"path": f"../{staged.name}", "packaging": "file"}  # the tarball itself, not a zip
        source = (Path(stage.outdir) / entry["source"]["path"]).resolve()
        assert source == staged.resolve() and source.stat().st_size == 5 * GIB  # inside cdk.out: the pipeline has it too
        (destination,) = entry["destinations"].values()
        assert destination["bucketName"] == f"cdk-hnb659fds-assets-{stage.account}-{REGION}"
        assert destination["objectKey"] == f"{asset_hash}.gz"
    # Staged once for every stage, and not copied again: the pre-staged link is the file CDK publishes.
    assert staged.stat().st_ino == (artifact.directory / ARTIFACT_FILE).stat().st_ino
    assert [p.name for p in app.outdir.glob(f"asset.{asset_hash}*")] == [staged.name]


def test_one_server_side_copy_and_no_lambda_holding_the_file(big):
    app, artifact, _ = big
    key = f"models/{MODEL}/{artifact.sha256}/{ARTIFACT_FILE}"
    for env, stage in app.stages.items():
        template = app.template(env, "Serving")
        resources = template.to_json()["Resources"]
        assert not [r["Type"] for r in resources.values() if r["Type"] in HOLDS_THE_FILE]
        assert not [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function" and "EphemeralStorage" in r["Properties"]]
        (_, function), = template.find_resources("AWS::Lambda::Function").items()  # AwsCustomResource's, sends one request
        assert function["Properties"]["Timeout"] == 900
        copy_id, copy = _only(template, COPY_RESOURCE_TYPE)
        destination = next(iter(_asset_manifest(stage, stage.serving)["files"][cdk_asset_hash(artifact.sha256)][
            "destinations"].values()))
        call = _copy_call(copy, "Create")
        assert call == _copy_call(copy, "Update")
        assert (call["service"], call["action"]) == ("S3", "copyObject")
        assert call["parameters"] == {
            "CopySource": f"{destination['bucketName']}/{destination['objectKey']}",
            "ExpectedSourceBucketOwner": stage.account,
            "Bucket": "<bucket>",
            "ExpectedBucketOwner": stage.account,
            "Key": key,
            "TaggingDirective": "REPLACE",
        }
        assert call["physicalResourceId"] == {"id": key}
        assert "Delete" not in copy["Properties"]  # earlier artifacts stay (prune=False), for rollbacks
        assert copy["Properties"]["InstallLatestAwsSdk"] is False  # no npm install at deploy time
        _, model = _only(template, "AWS::SageMaker::Model")
        url = model["Properties"]["PrimaryContainer"]["ModelDataUrl"]["Fn::Join"][1]
        assert url[0] == "s3://" and url[-1] == f"/{key}"  # s3://<artifact bucket>/<key>
        assert copy_id in model["DependsOn"]  # SageMaker reads the copy


def test_the_copy_may_read_one_object_and_write_one(big):
    app, artifact, _ = big
    for env, stage in app.stages.items():
        template = app.template(env, "Serving")
        _, copy = _only(template, COPY_RESOURCE_TYPE)
        (policy_id,) = copy["DependsOn"]  # AwsCustomResource's own policy, attached to its function's role
        policy = template.to_json()["Resources"][policy_id]
        statements = {json.dumps(s["Action"]): s["Resource"] for s in policy["Properties"]["PolicyDocument"]["Statement"]}
        assert statements['"s3:GetObject"'] == (
            f"arn:aws:s3:::cdk-hnb659fds-assets-{stage.account}-{REGION}/{cdk_asset_hash(artifact.sha256)}.gz")
        assert statements['"s3:PutObject"']["Fn::Join"][1][1] == f"/models/{MODEL}/{artifact.sha256}/{ARTIFACT_FILE}"
        assert sorted(statements) == ['"s3:GetObject"', '"s3:PutObject"', '["kms:Decrypt", "kms:GenerateDataKey"]']


def test_the_pipeline_publishes_it_in_its_assets_stage_as_a_file(big):
    app, artifact, _ = big
    pipeline = Template.from_stack(app.app.node.find_child("Pipeline"))
    stages = {s["Name"]: s["Actions"] for s in next(iter(pipeline.find_resources("AWS::CodePipeline::Pipeline").values()))[
        "Properties"]["Stages"]}
    assert "Assets" in stages
    commands = [c for p in pipeline.find_resources("AWS::CodeBuild::Project").values()
                for c in json.loads(p["Properties"]["Source"]["BuildSpec"]).get("phases", {}).get("build", {}).get("commands", [])
                if "cdk-assets" in c and cdk_asset_hash(artifact.sha256) in c]
    # One publish per stage account, each reading the asset manifest (packaging: file) from the synth output.
    assert len(commands) == len(app.stages), commands
    assert all("--path \"assembly-" in c and f' publish "{cdk_asset_hash(artifact.sha256)}:' in c for c in commands)


def _warnings(scope) -> list:
    return [str(e.data) for c in scope.node.find_all() for e in c.node.metadata if e.type == "aws:cdk:warning"]


def test_the_pipelines_deploy_actions_read_templates_only_well_under_their_256_mb_input_limit(big, tmp_path):
    """The synth step's templates-only copy of this 5 GiB app: no staged asset, every path the CloudFormation
    actions read, far below CodePipeline's 256 MB cap on their input. No pipeline warning at synthesis any more."""
    app, artifact, staged = big
    for stage in app.stages.values():
        assert not [w for w in _warnings(stage.serving) if "CDK Pipelines" in w or "256 MB" in w]
    pipeline = Template.from_stack(app.app.node.find_child("Pipeline"))
    actions = [a for s in next(iter(pipeline.find_resources("AWS::CodePipeline::Pipeline").values()))["Properties"]["Stages"]
               for a in s["Actions"]]
    read = [v.split("::", 1) for a in actions if a["ActionTypeId"]["Provider"] == "CloudFormation"
            for v in a.get("Configuration", {}).values() if isinstance(v, str) and "::" in v]
    assert read and {name for name, _ in read} == {"Synth_cdk_templates"}
    (tmp_path / ASSEMBLY_DIR).symlink_to(app.outdir, target_is_directory=True)
    subprocess.run(["bash", "-c", TEMPLATES_ONLY_COMMAND.replace("python ", f"{sys.executable} ", 1)], cwd=tmp_path, check=True)
    copy = tmp_path / TEMPLATES_ONLY_DIR
    assert all((copy / path).is_file() for _, path in read)
    assert not list(copy.rglob(staged.name)) and not list(copy.rglob("asset.*"))
    size = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file())
    assert size < CLOUDFORMATION_INPUT_MAX_BYTES // 100 < staged.stat().st_size, size


def test_cdk_nag_is_clean_and_the_copy_acknowledges_only_what_it_triggers(big):
    app, _, _ = big
    report = json.loads((app.outdir / "validation-report.json").read_text())
    (nag,) = [p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success" and nag["violations"] == []
    suppressed = {v["ruleName"] for v in nag["suppressedViolations"]}
    provider_acks = set()
    for stage in app.stages.values():
        for construct in stage.serving.node.find_all():
            if construct.node.id.startswith("AWS679f53fac002430cb0da5b7982bd2287"):
                for entry in construct.node.metadata:
                    if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                        provider_acks |= {rule.split("::", 1)[1] for rule in entry.data}
    assert provider_acks and provider_acks <= suppressed  # none stale
    everything = json.dumps([e.data for c in app.app.node.find_all() for e in c.node.metadata
                             if e.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY])
    assert "CDKBucketDeployment" not in everything and "hnb659fds" not in everything


# ------------------------------------------------------------ the limit: one CopyObject copies at most 5 GiB


def test_5_gib_is_allowed_and_one_byte_more_is_refused_with_the_limit_and_the_fix(tmp_path):
    at_limit = sparse_file(tmp_path / "at" / ARTIFACT_FILE, 5 * GIB)
    assert check_copy_size("big", at_limit) == 5 * GIB
    over = sparse_file(tmp_path / "over" / ARTIFACT_FILE, 5 * GIB + 1)
    with pytest.raises(ConfigError) as refused:
        check_copy_size("big", over)
    message = str(refused.value)
    for needle in ("model 'big'", "5,368,709,121 bytes", "CopyObject", "at most 5 GiB (5,368,709,120 bytes)",
                   "Make the artifact smaller", "UploadPartCopy"):
        assert needle in message, (needle, message)
    at_limit.unlink(), over.unlink()


def _minimal_app(outdir: Path, context: dict = None, synthesizer=None):
    app = cdk.App(outdir=str(outdir), context={**json.loads((REPO / "cdk.json").read_text())["context"], **(context or {})})
    stage = cdk.Stage(app, "Dev", env=cdk.Environment(account=ACCOUNT, region=REGION))
    store = ArtifactStoreStack(stage, "ArtifactStore", retain_data=False)
    serving = cdk.Stack(stage, "Serving", synthesizer=synthesizer)
    return app, stage, serving, store.import_into(serving)


def test_an_oversized_artifact_stops_synthesis_before_anything_is_staged(tmp_path):
    sparse_file(tmp_path / "artifact" / ARTIFACT_FILE, 5 * GIB + 1)
    app, _, serving, store = _minimal_app(tmp_path / "out")
    with pytest.raises(ConfigError, match="at most 5 GiB"):
        ModelArtifactUpload(serving, "Artifact", store=store, model_name="big",
                            artifact=BuiltArtifact(tmp_path / "artifact", {"sha256": "b" * 64}))
    assert not staged_path_for("b" * 64, tmp_path / "out").exists()
    (tmp_path / "artifact" / ARTIFACT_FILE).unlink()


# ------------------------------------------------------------ the bootstrap qualifier


def _small_artifact(directory: Path) -> BuiltArtifact:
    directory.mkdir(parents=True)
    (directory / ARTIFACT_FILE).write_bytes(b"\x1f\x8b" + bytes(1000))
    return BuiltArtifact(directory, {"sha256": sha256_of(directory / ARTIFACT_FILE)})


@pytest.mark.parametrize("how", ["context", "synthesizer"])
def test_the_copy_follows_the_apps_bootstrap_qualifier(tmp_path, how):
    qualifier = "mdlart42"
    if how == "context":  # what `cdk bootstrap --qualifier` users put in cdk.json
        app, stage, serving, store = _minimal_app(tmp_path / "out", {"@aws-cdk/core:bootstrapQualifier": qualifier})
    else:
        app, stage, serving, store = _minimal_app(tmp_path / "out", synthesizer=cdk.DefaultStackSynthesizer(qualifier=qualifier))
    artifact = _small_artifact(tmp_path / "artifact")
    ModelArtifactUpload(serving, "Artifact", store=store, model_name="m", artifact=artifact)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()  # raises on any unacknowledged cdk-nag finding
    bucket = f"cdk-{qualifier}-assets-{ACCOUNT}-{REGION}"
    template = Template.from_stack(serving).to_json()
    copy = next(r for r in template["Resources"].values() if r["Type"] == COPY_RESOURCE_TYPE)
    asset_hash = cdk_asset_hash(artifact.sha256)
    assert _copy_call(copy, "Create")["parameters"]["CopySource"] == f"{bucket}/{asset_hash}.gz"
    assert f"arn:aws:s3:::{bucket}/{asset_hash}.gz" in json.dumps(template)
    manifest = _asset_manifest(stage, serving)
    assert next(iter(manifest["files"][asset_hash]["destinations"].values()))["bucketName"] == bucket
    assert "hnb659fds" not in json.dumps(template) + json.dumps(manifest)
    report = json.loads((tmp_path / "out" / "validation-report.json").read_text())
    assert [p["conclusion"] for p in report["pluginReports"]] == ["success"]


# ------------------------------------------------------------ staging into cdk.out


def test_staging_copies_once_and_replaces_a_truncated_copy(tmp_path):
    source = tmp_path / "build" / ARTIFACT_FILE
    source.parent.mkdir()
    source.write_bytes(os.urandom(3000))
    sha = sha256_of(source)
    staged = stage_artifact(source, sha, tmp_path / "cdk.out")
    assert staged == tmp_path / "cdk.out" / f"asset.{cdk_asset_hash(sha)}.tar.gz"
    assert staged.read_bytes() == source.read_bytes() and staged.stat().st_ino != source.stat().st_ino  # a copy, not a link
    before = staged.stat()
    assert stage_artifact(source, sha, tmp_path / "cdk.out") == staged
    assert (staged.stat().st_ino, staged.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not copied again
    staged.write_bytes(source.read_bytes()[:100])  # an interrupted copy (CDK's own staging would keep it)
    stage_artifact(source, sha, tmp_path / "cdk.out")
    assert staged.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in staged.parent.iterdir()) == [staged.name]  # no partial file left behind


def test_the_same_build_synthesizes_the_same_asset_and_template(tmp_path):
    artifact = _small_artifact(tmp_path / "artifact")
    outputs = []
    for name in ("one", "two"):
        app, stage, serving, store = _minimal_app(tmp_path / name)
        ModelArtifactUpload(serving, "Artifact", store=store, model_name="m", artifact=artifact)
        app.synth()
        outputs.append((_asset_manifest(stage, serving), Template.from_stack(serving).to_json()))
        assert not [w for w in _warnings(serving) if "CDK Pipelines" in w]  # small artifacts: no pipeline warning
    assert outputs[0] == outputs[1]
    assert cdk_asset_hash(artifact.sha256) in outputs[0][0]["files"]


def test_two_models_share_one_copy_function_each_with_its_own_object_grants(tmp_path):
    app, _, serving, store = _minimal_app(tmp_path / "out")
    for name in ("first", "second"):
        ModelArtifactUpload(serving, name, store=store, model_name=name, artifact=_small_artifact(tmp_path / name))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()  # cdk-nag clean
    template = Template.from_stack(serving)
    assert len(template.find_resources("AWS::Lambda::Function")) == 1 and len(template.find_resources(COPY_RESOURCE_TYPE)) == 2
    for copy in template.find_resources(COPY_RESOURCE_TYPE).values():
        (policy_id,) = copy["DependsOn"]
        key = _copy_call(copy, "Create")["parameters"]["Key"]
        put = next(s for s in template.to_json()["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"]
                   if s["Action"] == "s3:PutObject")
        assert put["Resource"]["Fn::Join"][1][1] == f"/{key}"
    provider = serving.node.find_child("AWS" + "679f53fac002430cb0da5b7982bd2287")
    assert len([e for e in provider.node.metadata if e.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY]) == 1
