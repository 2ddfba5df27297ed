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


def test_one_named_endpoint_removed_and_another_added_is_a_removal_not_a_rename():
    (warning,) = _hazards({"Ep100": ENDPOINT}, {"Ep101": _with(ENDPOINT, EndpointName="Prod-Serving-other")})
    assert warning == "WARNING Ep100 (AWS::SageMaker::Endpoint, EndpointName Prod-Serving-m): removed, so CloudFormation deletes it"


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


# --- scope: only the models whose files changed -------------------------------------------------------------


def test_only_model_files_changed_scopes_the_diff_to_those_models_and_anything_else_to_everything():
    from infra_diff.scope import scope_of

    hundred = [f"model-{i:03d}" for i in range(1, 101)]
    scope = scope_of(["config/models/model-042.yaml"], "config", hundred)
    assert scope.models == ("model-042",) and not scope.full
    assert scope.describe() == ("scope: model files only (model-042); the other 99 models' files are unchanged, so neither "
                                "side builds or synthesizes them")
    # Added (model-101, not configured before) and removed (model-100, no longer configured) model files count too.
    scope = scope_of(["config/models/model-100.yaml", "config/models/model-042.yaml", "config/models/model-101.yaml"],
                     "config", [n for n in hundred if n != "model-100"] + ["model-101"])
    assert scope.models == ("model-042", "model-100", "model-101") and scope.other_models == 98
    assert scope_of(["cfg/models/a.yaml"], "./cfg/", ["a", "b"]).models == ("a",)
    for changed, reason in (
            (["config/models/model-042.yaml", "config/environments/dev.yaml"], "config/environments/dev.yaml differs"),
            (["config/app.yaml"], "config/app.yaml differs"),
            (["config/models/model-042.yaml", "stacks/serving_stack.py", "models/w.pth"], "stacks/serving_stack.py and 1 other file differ"),
            (["config/models/model-042.yml"], "config/models/model-042.yml differs"),
            (["config/models/nested/model-042.yaml"], "config/models/nested/model-042.yaml differs"),
            (["other/models/model-042.yaml"], "other/models/model-042.yaml differs"),
            ([], "no file differs from the base")):
        scope = scope_of(changed, "config", hundred)
        assert scope.full and reason in scope.describe(), (changed, scope.describe())
        assert scope.describe().startswith("scope: everything (")
    assert scope_of(["config/models/a.yaml"], "../elsewhere", ["a"]).full  # a config outside the repository


def test_changed_files_are_committed_staged_unstaged_and_untracked_but_not_ignored(tmp_path):
    from infra_diff.git import changed_files, exists_in_commit

    repo = tmp_path / "repo"
    (repo / "config" / "models").mkdir(parents=True)
    for name in ("a", "b", "c", "d", "e"):
        (repo / "config" / "models" / f"{name}.yaml").write_text(f"{name}: 1\n")
    (repo / ".gitignore").write_text("*.log\n")
    _git(repo, "init", "--quiet")
    _git(repo, "add", "--all")
    _git(repo, *IDENTITY, "commit", "--quiet", "-m", "base")
    base = _git(repo, "rev-parse", "HEAD").strip()
    assert changed_files(repo, base) == []
    (repo / "config" / "models" / "a.yaml").write_text("a: 2\n")
    _git(repo, *IDENTITY, "commit", "--quiet", "--all", "-m", "committed")
    (repo / "config" / "models" / "b.yaml").write_text("b: 2\n")
    _git(repo, "add", "config/models/b.yaml")  # staged
    (repo / "config" / "models" / "c.yaml").write_text("c: 2\n")  # unstaged
    _git(repo, "mv", "config/models/d.yaml", "config/models/d2.yaml")  # a rename: both names
    (repo / "config" / "models" / "new model.yaml").write_text("n: 1\n")  # untracked, a space in its name
    (repo / "build.log").write_text("ignored\n")
    assert changed_files(repo, base) == ["config/models/a.yaml", "config/models/b.yaml", "config/models/c.yaml",
                                         "config/models/d.yaml", "config/models/d2.yaml", "config/models/new model.yaml"]
    assert exists_in_commit(repo, base, "config/models/d.yaml") and not exists_in_commit(repo, base, "config/models/d2.yaml")


def test_a_scoped_side_builds_only_the_changed_models_it_has_and_synthesizes_only_them(monkeypatch, tmp_path):
    from infra_diff import cdk

    commands = []
    monkeypatch.setattr(cdk, "_run", lambda what, cwd, command, extra_env=None: commands.append(command) or "")
    tools = cdk.Toolchain(Path("py"), Path("cdk"), Path("mx"), Path("rt"))
    tools.build_and_synth(tmp_path, "config", tmp_path / "a", tmp_path / "o", "head",
                          only_models=("model-042", "model-101"), build_models=["model-042"])
    build, synth = commands
    assert build[build.index("build"):] == ["build", "--config", "config", "--out", str(tmp_path / "a"), "--model", "model-042"]
    assert synth[-2:] == ["-c", "only_models=model-042,model-101"]
    commands.clear()  # a side with none of the changed models (an added model's base) builds nothing
    tools.build_and_synth(tmp_path, "config", tmp_path / "b", tmp_path / "o", "base", only_models=("model-101",), build_models=[])
    ((*_, context, only),) = commands
    assert only == "only_models=model-101" and (tmp_path / "b").is_dir()
    commands.clear()  # a full diff: every model, no only_models
    tools.build_and_synth(tmp_path, "config", tmp_path / "c", tmp_path / "o", "base")
    build, synth = commands
    assert "--model" not in build and not any(arg.startswith("only_models") for arg in synth)


# --- many stacks: the summary and moves between stacks ----------------------------------------------------------


def test_the_summary_names_ten_differing_stacks_then_counts_and_markdown_adds_a_table():
    from infra_diff.report import overview

    base = {f"Dev/Serving{i}": _stack(f"Dev/Serving{i}", {"B": {"Type": "AWS::SNS::Topic"}}) for i in range(1, 101)}
    head = {name: _stack(name, {"B": {"Type": "AWS::SNS::Topic", "Properties": {"X": 1}}} if i <= 55 else stack.template["Resources"])
            for i, (name, stack) in enumerate(base.items(), start=1) if i != 100}
    head["Dev/New"] = _stack("Dev/New")
    comparisons = compare(base, head)
    line = summary(comparisons)
    assert line == ("57 stacks with differences (1 added, 1 removed, 55 changed: " + ", ".join(f"Dev/Serving{i}" for i in range(1, 11))
                    + " and 47 more); 44 stacks unchanged.")
    assert summary(comparisons, "Scope: x.") == line + " Scope: x."
    table = overview(comparisons).splitlines()
    assert table[:3] == ["| stack | change | warnings |", "|---|---|---|", "| `Dev/Serving1` | changed |  |"]
    assert len(table) == 2 + 57 and "| `Dev/New` | added |  |" in table and "| `Dev/Serving100` | removed |  |" in table
    assert overview(comparisons[:10]) == ""  # ten or fewer: the summary line names them all
    markdown = render("header", [], line, True, scope="scope: everything", table=overview(comparisons))
    assert markdown.startswith("#### header\n\nscope: everything\n\n| stack | change | warnings |\n")


ROLE = {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "Dev-Serving-m-SmokeTest", "AssumeRolePolicyDocument": {}}}
QUEUE = {"Type": "AWS::SQS::Queue", "Properties": {}}


def test_a_named_resource_moving_to_another_stack_of_its_stage_is_flagged_where_it_lands():
    from infra_diff.hazards import cross_stack_move_hazards

    dev_endpoint = _with(ENDPOINT, EndpointName="Dev-Serving-m")
    by_stack = {"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, "x"]]}  # a name that differs from stack to stack
    base = {"Dev/Serving": _stack("Dev/Serving", {"Ep": dev_endpoint, "Role": ROLE, "Q": QUEUE,
                                                  "Stacked": _with(ENDPOINT, EndpointName=by_stack)}),
            "Dev/Serving7": _stack("Dev/Serving7", {"Other": _with(ENDPOINT, EndpointName="Dev-Serving-n")}),
            "Prod/Serving": _stack("Prod/Serving", {"Ep": ENDPOINT})}
    head = {"Dev/Serving": _stack("Dev/Serving", {}),
            "Dev/Serving7": _stack("Dev/Serving7", {"Other": _with(ENDPOINT, EndpointName="Dev-Serving-n"), "Ep7": dev_endpoint,
                                                    "Role7": ROLE, "Q7": QUEUE, "Stacked7": _with(ENDPOINT, EndpointName=by_stack)}),
            # Another stage gaining a same-named endpoint is another account and region: no collision.
            "Prod/Serving": _stack("Prod/Serving", {}), "Prod/Serving7": _stack("Prod/Serving7", {"Ep": dev_endpoint})}
    comparisons = compare(base, head)
    moves = cross_stack_move_hazards(comparisons)
    assert list(moves) == ["Dev/Serving7"]
    endpoint, role = moves["Dev/Serving7"]
    assert endpoint == (
        "WARNING Ep7 (AWS::SageMaker::Endpoint, EndpointName Dev-Serving-m): moves here from Dev/Serving (Ep). CloudFormation "
        "creates it in Dev/Serving7 while Dev/Serving still holds it: deploying Dev/Serving7 first fails (the name is taken) "
        "and rolls back; deploying Dev/Serving first deletes it, then Dev/Serving7 creates it: the endpoint is deleted and "
        "created again: requests fail until it is InService (minutes). Fix: keep it in Dev/Serving (for a model, pin it to "
        "that stack in its config), or accept the delete-then-create with downtime: deploy Dev/Serving first, then Dev/Serving7")
    assert role.startswith("WARNING Role7 (AWS::IAM::Role, RoleName Dev-Serving-m-SmokeTest): moves here from Dev/Serving (Role).")
    landed = section(comparisons[1], moved_here=moves["Dev/Serving7"])
    assert landed.body.startswith(endpoint + "\n" + role)
    # Counted with the other warnings: Dev/Serving's removals (Ep, Role, Stacked), Prod/Serving's Ep and the two moves.
    assert summary(comparisons).endswith("6 WARNINGS in the sections above.")
    assert cross_stack_move_hazards(comparisons[2:]) == {}  # Prod alone: nothing moved within a stage
    # Scoped to the changed models, a stack on one side only may hold other models: said so, not "stack added".
    assert section(comparisons[3]).title == "Prod/Serving7: stack added (not in the base)"
    assert section(comparisons[3], scoped=True).title == (
        "Prod/Serving7: the changed models arrive (this stack is not in the base's synthesis of them; it is new unless "
        "other models live here)")
    (gone,) = compare({"Dev/Serving05": _stack("Dev/Serving05", {"Ep": dev_endpoint})}, {})
    scoped = section(gone, scoped=True)
    assert scoped.title.startswith("Dev/Serving05: the changed models leave (this stack is not in the working tree's synthesis")
    assert "The working tree no longer places the changed models in this stack; their resources here:\n[-] " in scoped.body


def test_a_model_moved_between_serving_stacks_of_the_real_template_is_flagged(eia_app):
    """The synthesized Prod serving stack, its image-classifier resources moved to a second serving stack."""
    from infra_diff.hazards import cross_stack_move_hazards

    resources = eia_app.template("prod", "Serving").to_json()["Resources"]
    moved = {i: r for i, r in resources.items() if i.startswith("ImageClassifier")}
    assert "ImageClassifierServingEndpointE7182304" in moved
    comparisons = compare({"Prod/Serving": _stack("Prod/Serving", resources)},
                          {"Prod/Serving": _stack("Prod/Serving", {i: r for i, r in resources.items() if i not in moved}),
                           "Prod/Serving2": _stack("Prod/Serving2", moved)})
    moves = cross_stack_move_hazards(comparisons)
    assert list(moves) == ["Prod/Serving2"]
    assert moves["Prod/Serving2"][0].startswith(
        "WARNING ImageClassifierServingEndpointE7182304 (AWS::SageMaker::Endpoint, EndpointName Prod-Serving-image-classifier): "
        "moves here from Prod/Serving (ImageClassifierServingEndpointE7182304). CloudFormation creates it in Prod/Serving2 "
        "while Prod/Serving still holds it")
    assert section(comparisons[1], moved_here=moves["Prod/Serving2"]).body.startswith(moves["Prod/Serving2"][0])


# --- end to end ------------------------------------------------------------------------------------------------


def _edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


IDENTITY = ["-c", "user.name=infra-diff test", "-c", "user.email=test@example.invalid"]


def committed_copy(repo: Path, edit=lambda repo: None) -> Path:
    """A git repository at `repo` holding this checkout's committed tree (not the working tree's other edits) plus
    this package, `edit`ed, in one commit. The venvs and node_modules link to this checkout's."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(repo, filter="data")
    shutil.rmtree(repo / "infra_diff", ignore_errors=True)
    shutil.copytree(REPO / "infra_diff", repo / "infra_diff", ignore=shutil.ignore_patterns("__pycache__"))
    edit(repo)
    _git(repo, "init", "--quiet", "--initial-branch", "main")
    (repo / ".git" / "info" / "exclude").write_text(".venv\n.venv-mxnet\n.venv-runtimes\nnode_modules\n")
    for link in (".venv", ".venv-mxnet", ".venv-runtimes", "node_modules"):
        (repo / link).symlink_to(REPO / link)
    _git(repo, "add", "--all")
    _git(repo, *IDENTITY, "commit", "--quiet", "-m", "as is")
    return repo


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory) -> Path:
    """The committed tree with the tiny model; commit 1 as is, commit 2 raises prod's max_instances."""
    repo = committed_copy(tmp_path_factory.mktemp("infra-diff") / "repo", lambda repo: _edit_yaml(
        repo / "config" / "models" / "image-classifier.yaml", lambda m: m["build"].update(TINY_BUILD)))
    _edit_yaml(repo / "config" / "environments" / "prod.yaml", lambda e: e["scaling"].update(max_instances=7))
    _git(repo, *IDENTITY, "commit", "--quiet", "--all", "-m", "prod: max_instances 4 -> 7")
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
