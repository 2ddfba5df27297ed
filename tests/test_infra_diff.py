"""`python -m infra_diff` (make diff): stack matching and report as units, then end to end in a throwaway
repository with two real commits, built and synthesized by the real CDK CLI."""
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from infra_diff import DIFFERENCES, NO_DIFFERENCES
from infra_diff.assembly import ADDED, CHANGED, REMOVED, UNCHANGED, Stack, compare, exit_status, read_stacks
from infra_diff.report import cdk_diff_body, render, section, summary
from tests.conftest import REPO, TINY_BUILD


def _stack(name, resources=None, assets=None, file="x.template.json"):
    return Stack(name, Path(file), {"Resources": resources or {}}, assets or {})


def test_stacks_are_matched_by_display_name_not_by_file_and_only_differences_count():
    bucket = {"B": {"Type": "AWS::S3::Bucket"}}
    base = {"Dev/Store": _stack("Dev/Store", bucket, file="DevStoreAAAA.template.json"),
            "Dev/Serving": _stack("Dev/Serving", assets={"Model": "a" * 64}),
            "Dev/Old": _stack("Dev/Old", bucket)}
    head = {"Dev/Store": _stack("Dev/Store", bucket, file="DevStoreBBBB.template.json"),
            "Dev/Serving": _stack("Dev/Serving", assets={"Model": "b" * 64}),
            "Dev/New": _stack("Dev/New")}
    comparisons = compare(base, head)
    assert [(c.name, c.status) for c in comparisons] == [
        ("Dev/Store", UNCHANGED), ("Dev/Serving", CHANGED), ("Dev/New", ADDED), ("Dev/Old", REMOVED)]
    assert comparisons[1].asset_changes == [f"[~] asset Model: {'a' * 12} -> {'b' * 12}"]
    assert exit_status(comparisons) == DIFFERENCES
    assert exit_status(comparisons[:1]) == NO_DIFFERENCES
    # Dev/Old takes its bucket with it: a warning, counted in the summary (the sections fold away in a PR comment).
    assert summary(comparisons) == ("3 stacks with differences (Dev/Serving, Dev/New, Dev/Old); 1 stack unchanged. "
                                    "1 WARNING in the sections above.")
    assert summary(comparisons[:3]) == "2 stacks with differences (Dev/Serving, Dev/New); 1 stack unchanged."
    removed = section(comparisons[3])
    assert removed.title == "Dev/Old: stack removed (not in the working tree)" and "[-] AWS::S3::Bucket B" in removed.body
    assert removed.body.startswith("WARNING B (AWS::S3::Bucket, holds data): removed, so CloudFormation deletes it, with its data")


# --- replacements of named and data-holding resources ------------------------------------------------------------

ENDPOINT = {"Type": "AWS::SageMaker::Endpoint", "Properties": {"EndpointName": "Prod-Serving-m", "EndpointConfigName": "c1"}}
BUCKET = {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "Properties": {"VersioningConfiguration": {"Status": "Enabled"}}}
KEY = {"Type": "AWS::KMS::Key", "Properties": {"EnableKeyRotation": True}}


def _hazards(base_resources, head_resources):
    from infra_diff.hazards import replacement_hazards

    (comparison,) = compare({"Prod/S": _stack("Prod/S", base_resources)}, {"Prod/S": _stack("Prod/S", head_resources)})
    return replacement_hazards(comparison)


def _with(resource, **properties):
    return {**resource, "Properties": {**resource["Properties"], **properties}}


def test_a_named_endpoint_under_a_new_logical_id_collides_with_itself():
    (warning,) = _hazards({"Ep1": ENDPOINT}, {"Ep2": ENDPOINT})
    assert warning == ("WARNING Ep1 (AWS::SageMaker::Endpoint, EndpointName Prod-Serving-m): its logical ID changes to Ep2, a "
                       "delete and a create; CloudFormation creates Ep2 first, the name is still taken, and the deploy fails and "
                       "rolls back. Keep the logical ID (override_logical_id)")


def test_a_new_endpoint_name_replaces_the_endpoint():
    (warning,) = _hazards({"Ep": ENDPOINT}, {"Ep": _with(ENDPOINT, EndpointName="Prod-Serving-n")})
    assert warning.startswith("WARNING Ep (AWS::SageMaker::Endpoint, EndpointName Prod-Serving-m): EndpointName changes to "
                              "Prod-Serving-n, which replaces it")


def test_a_replacing_change_to_a_named_resource_that_keeps_its_name_fails():
    role = {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "Prod-Serving-SmokeTest", "Path": "/"}}
    (warning,) = _hazards({"R": role}, {"R": _with(role, Path="/smoke/")})
    assert "changing Path replaces it, and CloudFormation cannot replace a resource with a fixed name" in warning


def test_data_under_a_new_logical_id_or_removed_is_lost_or_orphaned():
    moved, removed = _hazards({"Store": BUCKET, "Key": KEY}, {"Store2": BUCKET})
    assert moved == ("WARNING Store (AWS::S3::Bucket, holds data): its logical ID changes to Store2, a delete and a create: a new "
                     "empty one is created and this one deleted (DeletionPolicy Retain: the old one stays behind, outside the "
                     "stack, with its data). Keep the logical ID (override_logical_id)")
    assert removed == "WARNING Key (AWS::KMS::Key, holds data): removed, so CloudFormation deletes it, with its data"


def test_a_create_only_change_to_a_bucket_replaces_it():
    (warning,) = _hazards({"B": BUCKET}, {"B": _with(BUCKET, BucketName="fixed")})
    assert warning.startswith("WARNING B (AWS::S3::Bucket, holds data): changing BucketName replaces it: a new, empty one")


def test_updates_in_place_and_unnamed_stateless_replacements_are_not_flagged():
    config = {"Type": "AWS::SageMaker::EndpointConfig", "Properties": {"ProductionVariants": [{"InstanceType": "ml.m5.large"}]}}
    new_config = {"Type": "AWS::SageMaker::EndpointConfig", "Properties": {"ProductionVariants": [{"InstanceType": "ml.g4dn.xlarge"}]}}
    assert _hazards({"Ep": ENDPOINT, "Cfg1": config, "B": BUCKET, "K": KEY},
                    {"Ep": _with(ENDPOINT, EndpointConfigName="c2"), "Cfg2": new_config,
                     "B": _with(BUCKET, LifecycleConfiguration={}), "K": _with(KEY, Description="x")}) == []


def test_a_renamed_construct_in_the_synthesized_serving_stack_is_flagged(eia_app):
    """The real template, its endpoint given the id an unpinned rename of its construct would give it."""
    from infra_diff.hazards import replacement_hazards

    base = eia_app.template("prod", "Serving").to_json()
    resources = dict(base["Resources"])
    resources["ImageClassifierHostingEndpoint0A1B2C3D"] = resources.pop("ImageClassifierServingEndpointE7182304")
    (comparison,) = compare({"Prod/Serving": _stack("Prod/Serving", base["Resources"])}, {"Prod/Serving": _stack("Prod/Serving", resources)})
    (warning,) = replacement_hazards(comparison)
    assert warning.startswith("WARNING ImageClassifierServingEndpointE7182304 (AWS::SageMaker::Endpoint, EndpointName "
                              "Prod-Serving-image-classifier): its logical ID changes to ImageClassifierHostingEndpoint0A1B2C3D")
    assert section(comparison).body.startswith(warning)


def test_nested_stage_assemblies_are_read_without_the_template_asset_and_cdk_metadata(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {
        "assembly-Dev": {"type": "cdk:cloud-assembly", "properties": {"directoryName": "assembly-Dev", "displayName": "Dev"}}}}))
    nested = tmp_path / "assembly-Dev"
    nested.mkdir()
    (nested / "DevServing1234.template.json").write_text(json.dumps({"Resources": {
        "Fn": {"Type": "AWS::Lambda::Function"}, "CDKMetadata": {"Type": "AWS::CDK::Metadata", "Properties": {"Analytics": "v2:..."}}}}))
    (nested / "DevServing1234.assets.json").write_text(json.dumps({"files": {
        "f" * 64: {"displayName": "Model/Asset1", "source": {"path": "../asset.fff"}},
        "t" * 64: {"displayName": "Dev-Serving Template", "source": {"path": "DevServing1234.template.json"}}}}))
    (nested / "manifest.json").write_text(json.dumps({"artifacts": {
        "DevServing1234.assets": {"type": "cdk:asset-manifest", "properties": {"file": "DevServing1234.assets.json"}},
        "DevServing1234": {"type": "aws:cloudformation:stack", "displayName": "Dev/Serving", "dependencies": ["DevServing1234.assets"],
                           "properties": {"templateFile": "DevServing1234.template.json"}}}}))
    stacks = read_stacks(tmp_path)
    assert list(stacks) == ["Dev/Serving"]
    assert stacks["Dev/Serving"].assets == {"Model/Asset1": "f" * 64}
    assert stacks["Dev/Serving"].template == {"Resources": {"Fn": {"Type": "AWS::Lambda::Function"}}}


def test_cdk_diff_output_keeps_the_stack_lines_only_and_markdown_marks_them():
    output = "\n".join(["/tmp/tmpab12/lib/program.js:1:5591", "WARNING something (Construct Annotations)", "",
                        "Stack Prod/Serving (Prod-Serving)", "Resources", "[~] AWS::X::Y Target T", " ├─ [-] 4", " └─ [+] 7",
                        "", "", "✨  Number of stacks with differences: 1", ""])
    body = cdk_diff_body(output, "Prod/Serving")
    assert body == "Resources\n[~] AWS::X::Y Target T\n ├─ [-] 4\n └─ [+] 7"
    comparison = compare({"Prod/Serving": _stack("Prod/Serving")}, {"Prod/Serving": _stack("Prod/Serving", {"T": {}})})[0]
    markdown = render("header", [section(comparison, output)], "1 stack with differences (Prod/Serving); 0 stacks unchanged.", True)
    assert "<details><summary><b>Prod/Serving: changed</b></summary>" in markdown
    assert "```diff\n Resources\n![~] AWS::X::Y Target T\n- ├─ [-] 4\n+ └─ [+] 7\n```" in markdown


# --- end to end ------------------------------------------------------------------------------------------------


def _edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory) -> Path:
    """The committed tree (not the working tree's other edits) plus this package, with the tiny model;
    commit 1 as is, commit 2 raises prod's max_instances. The venvs and node_modules link to this checkout's."""
    repo = tmp_path_factory.mktemp("infra-diff") / "repo"
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(repo, filter="data")
    shutil.rmtree(repo / "infra_diff", ignore_errors=True)
    shutil.copytree(REPO / "infra_diff", repo / "infra_diff", ignore=shutil.ignore_patterns("__pycache__"))
    _edit_yaml(repo / "config" / "models" / "image-classifier.yaml", lambda m: m["build"].update(TINY_BUILD))
    _git(repo, "init", "--quiet", "--initial-branch", "main")
    (repo / ".git" / "info" / "exclude").write_text(".venv\n.venv-mxnet\n.venv-runtimes\nnode_modules\n")
    for link in (".venv", ".venv-mxnet", ".venv-runtimes", "node_modules"):
        (repo / link).symlink_to(REPO / link)
    identity = ["-c", "user.name=infra-diff test", "-c", "user.email=test@example.invalid"]
    _git(repo, "add", "--all")
    _git(repo, *identity, "commit", "--quiet", "-m", "as is, tiny model")
    _edit_yaml(repo / "config" / "environments" / "prod.yaml", lambda e: e["scaling"].update(max_instances=7))
    _git(repo, *identity, "commit", "--quiet", "--all", "-m", "prod: max_instances 4 -> 7")
    return repo


def _infra_diff(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra_diff", *args], cwd=repo, capture_output=True, text=True, timeout=600)


def _assert_left_nothing_behind(repo: Path) -> None:
    assert len(_git(repo, "worktree", "list").splitlines()) == 1
    assert not (repo / "build").exists() and not (repo / "cdk.out").exists()
    assert _git(repo, "status", "--porcelain") == ""


@pytest.mark.slow
def test_a_config_change_shows_as_a_diff_of_the_prod_serving_stack_only(scratch_repo):
    result = _infra_diff(scratch_repo, "--base", "HEAD~1")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "=== Prod/Serving: changed ===" in out
    assert "MaxCapacity" in out and "[-] 4" in out and "[+] 7" in out
    assert "Dev/" not in out and "Staging/" not in out
    assert re.search(r"\n1 stack with differences \(Prod/Serving\); \d+ stacks unchanged\.\n$", out)
    assert "synthesizing base " in result.stderr and "Traceback" not in result.stderr
    _assert_left_nothing_behind(scratch_repo)


@pytest.mark.slow
def test_the_same_commit_synthesized_in_another_directory_has_no_differences(scratch_repo):
    result = _infra_diff(scratch_repo, "--base", "HEAD")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\nNo differences: all \d+ stacks unchanged\.\n$", result.stdout)
    _assert_left_nothing_behind(scratch_repo)


@pytest.mark.slow
def test_make_diff_warns_when_a_construct_rename_would_replace_a_named_endpoint(scratch_repo):
    """Without the pinned logical id (someone removes it), renaming the endpoint's construct changes its logical id."""
    serving = scratch_repo / "stacks" / "serving_stack.py"
    endpoint = scratch_repo / "stacks" / "constructs" / "model_endpoint.py"
    source, endpoint_source = serving.read_text(), endpoint.read_text()
    pin = "        self.endpoint.override_logical_id(endpoint_logical_id(deployment.name))\n"
    assert source.count('"Serving",') == 1 and endpoint_source.count(pin) == 1
    try:
        serving.write_text(source.replace('"Serving",', '"Hosting",'))
        endpoint.write_text(endpoint_source.replace(pin, ""))
        result = _infra_diff(scratch_repo, "--base", "HEAD")
    finally:
        _git(scratch_repo, "checkout", "--", "stacks/serving_stack.py", "stacks/constructs/model_endpoint.py")
    assert result.returncode == 1, result.stdout + result.stderr
    for stage in ("Dev", "Staging", "Prod"):
        for model, logical_id in (("image-classifier", "ImageClassifierServingEndpointE7182304"),
                                  ("object-detector", "ObjectDetectorServingEndpointFEBB68B4")):
            assert (f"WARNING {logical_id} (AWS::SageMaker::Endpoint, EndpointName {stage}-Serving-{model}): its logical ID "
                    f"changes to {logical_id.replace('Serving', 'Hosting')[:-8]}") in result.stdout
    assert re.search(r"stacks unchanged\. 6 WARNINGS in the sections above\.\n$", result.stdout)
    _assert_left_nothing_behind(scratch_repo)


@pytest.mark.slow
def test_an_unknown_ref_is_a_plain_error(scratch_repo):
    result = _infra_diff(scratch_repo, "--base", "no-such-ref")
    assert result.returncode == 2
    assert "error: unknown git ref 'no-such-ref'; try HEAD~1" in result.stderr and "Traceback" not in result.stderr
    _assert_left_nothing_behind(scratch_repo)
