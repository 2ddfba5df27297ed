"""make diff's cache and its summary on top: the keys as units, then one throwaway repository diffed for real
(the tiny classifier, its serving profile switched eia -> cpu in the working tree), cold, warm, and against a new
base commit."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.diff import _tiny_classifier_only
from infra_diff.assembly import compare
from infra_diff.cache import DiffCache, artifacts_digest, environment_digest, toolchain_digest, working_tree_digest
from infra_diff.cdk import Toolchain
from infra_diff.changes import stack_changes
from infra_diff.report import change_summary
from tests.test_infra_diff import IDENTITY, _git, _stack, committed_copy

# --- keys ---------------------------------------------------------------------------------------------------


def _fake_toolchain(root: Path) -> Toolchain:
    """Two venvs (the app's, MXNet's), one runtime venv and a CLI tree, with nothing in them but what the key reads."""
    for venv, package in ((".venv", "aws_cdk_lib-2.275.0"), (".venv-mxnet", "mxnet-1.9.1"), (".venv-runtimes/pytorch-2.6.0", "torch-2.6.0")):
        (root / venv / "bin").mkdir(parents=True)
        (root / venv / "pyvenv.cfg").write_text("version = 3.11.7\n")
        (root / venv / "lib" / "python3.11" / "site-packages" / f"{package}.dist-info").mkdir(parents=True)
    (root / "node_modules" / ".bin").mkdir(parents=True)
    (root / "node_modules" / ".package-lock.json").write_text('{"packages": {"node_modules/aws-cdk": {"version": "2.1148.1"}}}')
    return Toolchain(python=root / ".venv" / "bin" / "python", cdk=root / "node_modules" / ".bin" / "cdk",
                     mxnet_python=root / ".venv-mxnet" / "bin" / "python", runtimes_dir=root / ".venv-runtimes")


def test_the_toolchain_key_changes_with_any_installed_package_or_the_cdk_cli(tmp_path):
    tools = _fake_toolchain(tmp_path)
    before = toolchain_digest(tools)
    assert toolchain_digest(tools) == before  # nothing changed, same key
    site = tmp_path / ".venv-runtimes" / "pytorch-2.6.0" / "lib" / "python3.11" / "site-packages"
    (site / "torch-2.6.0.dist-info").rename(site / "torch-2.6.1.dist-info")  # a runtime's torch upgraded
    upgraded_runtime = toolchain_digest(tools)
    assert upgraded_runtime != before
    (tmp_path / "node_modules" / ".package-lock.json").write_text('{"packages": {"node_modules/aws-cdk": {"version": "2.1150.0"}}}')
    assert toolchain_digest(tools) not in (before, upgraded_runtime)


def test_an_assembly_key_covers_the_source_artifacts_scope_and_toolchain(tmp_path):
    tools = _fake_toolchain(tmp_path / "tools")
    cache = DiffCache(tmp_path / "cache", tools)
    artifacts = tmp_path / "artifacts"
    (artifacts / "m").mkdir(parents=True)
    (artifacts / "m" / "manifest.json").write_text('{"sha256": "a"}')
    key = cache.key("commit 1234", artifacts, "config", None)
    assert cache.key("commit 1234", artifacts, "config", None) == key
    assert cache.key("commit 5678", artifacts, "config", None) != key
    assert cache.key("commit 1234", artifacts, "config", ("m",)) != key
    assert cache.key("commit 1234", artifacts, "other-config", None) != key
    (artifacts / "m" / "manifest.json").write_text('{"sha256": "b"}')  # the model was rebuilt differently
    assert cache.key("commit 1234", artifacts, "config", None) != key
    (artifacts / "m" / "manifest.json").write_text('{"sha256": "a"}')
    site = tmp_path / "tools" / ".venv" / "lib" / "python3.11" / "site-packages"
    (site / "aws_cdk_lib-2.275.0.dist-info").rename(site / "aws_cdk_lib-2.276.0.dist-info")
    assert DiffCache(tmp_path / "cache", tools).key("commit 1234", artifacts, "config", None) != key
    assert cache.assembly(key) is None  # never stored: no entry to find


def test_the_environment_key_ignores_shell_bookkeeping_but_not_what_the_app_reads(monkeypatch):
    before = environment_digest()
    monkeypatch.setenv("PWD", "/elsewhere")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test")
    monkeypatch.setenv("MAKELEVEL", "3")
    assert environment_digest() == before
    monkeypatch.setenv("NAME_PREFIX", "alice")  # app.py reads it: another synthesis
    assert environment_digest() != before


def test_the_working_tree_key_is_the_content_of_every_file_git_does_not_ignore(tmp_path):
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "config" / "dev.yaml").write_text("max_instances: 1\n")
    (repo / ".gitignore").write_text("build/\n")
    _git(repo, "init", "--quiet")
    _git(repo, "add", "--all")
    _git(repo, *IDENTITY, "commit", "--quiet", "-m", "base")
    clean = working_tree_digest(repo)
    (repo / "build").mkdir()
    (repo / "build" / "out.txt").write_text("ignored\n")
    assert working_tree_digest(repo) == clean
    (repo / "config" / "dev.yaml").write_text("max_instances: 2\n")  # unstaged: no commit would show it
    edited = working_tree_digest(repo)
    assert edited != clean
    (repo / "config" / "new.yaml").write_text("x: 1\n")  # untracked
    assert working_tree_digest(repo) not in (clean, edited)
    (repo / "config" / "new.yaml").unlink()
    assert working_tree_digest(repo) == edited
    (repo / "cdk.context.json").write_text("{}")  # ignored in a real checkout, but the CLI reads it
    with_context = working_tree_digest(repo)
    assert with_context != edited
    outside = tmp_path / "shared-weights"  # a linked directory: git sees the link, the build reads what is behind it
    outside.mkdir()
    (outside / "w.pth").write_text("1")
    (repo / "weights").symlink_to(outside)
    linked = working_tree_digest(repo)
    (outside / "w.pth").write_text("2")
    assert working_tree_digest(repo) not in (with_context, linked)


def test_artifacts_key_is_each_models_manifest(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_text('{"sha256": "1"}')
    first = artifacts_digest(tmp_path)
    (tmp_path / "a" / "model.tar.gz").write_text("the archive's hash is in the manifest")
    assert artifacts_digest(tmp_path) == first
    (tmp_path / "a" / "manifest.json").write_text('{"sha256": "2"}')
    assert artifacts_digest(tmp_path) != first


# --- summary, as a unit -------------------------------------------------------------------------------------


def test_the_summary_counts_added_changed_replaced_removed_and_names_iam_changes():
    role = {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {"v": 1}}}
    config = {"Type": "AWS::SageMaker::EndpointConfig", "Properties": {"ProductionVariants": [{"InstanceType": "ml.m5.large"}]}}
    topic = {"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": "a"}}
    base = {"S": _stack("S", {"Role": role, "Cfg": config, "Topic": topic, "Gone": {"Type": "AWS::SQS::Queue"},
                              "Meta": {"Type": "AWS::SNS::Topic", "Metadata": {"aws:cdk:path": "a"}}})}
    head = {"S": _stack("S", {"Role": {**role, "Properties": {"AssumeRolePolicyDocument": {"v": 2}}},
                              "Cfg": {**config, "Properties": {"ProductionVariants": [{"InstanceType": "ml.c5.xlarge"}]}},
                              "Topic": {**topic, "Properties": {"DisplayName": "b"}}, "Policy": {"Type": "AWS::IAM::Policy"},
                              "Meta": {"Type": "AWS::SNS::Topic", "Metadata": {"aws:cdk:path": "b"}}})}
    (comparison,) = compare(base, head)
    changes = stack_changes(comparison)
    # Role and Topic in place (Meta's metadata only is no change), Cfg replaced, Policy added, Gone removed.
    assert (changes.added, changes.changed, len(changes.replaced), changes.removed) == (1, 2, 1, 1)
    assert changes.replaced == ["Cfg (AWS::SageMaker::EndpointConfig): ProductionVariants (replaced on change)"]
    assert changes.iam == ["~ Role (AWS::IAM::Role): AssumeRolePolicyDocument", "+ Policy (AWS::IAM::Policy)"]
    text = change_summary([comparison]).splitlines()
    assert text[1:3] == ["  stack  added  changed  replaced  removed", "  S          1        2         1        1"]
    markdown = change_summary([comparison], markdown=True).splitlines()
    assert markdown[2].startswith("| `S` | 1 | 2 | 1 | 1 | replaced: Cfg (AWS::SageMaker::EndpointConfig)")
    assert change_summary(compare(base, base)) == ""


def test_the_summary_stays_one_screen_with_many_stacks_and_many_iam_changes():
    roles = {f"Role{j}": {"Type": "AWS::IAM::Role", "Properties": {"MaxSessionDuration": 3600}} for j in range(8)}
    base = {f"Dev/Serving{i}": _stack(f"Dev/Serving{i}", roles) for i in range(30)}
    head = {name: _stack(name, {j: {**r, "Properties": {"MaxSessionDuration": 7200}} for j, r in roles.items()}) for name in base}
    lines = change_summary(compare(base, head)).splitlines()
    assert len(lines) <= 40
    assert lines[-2] == "  and 20 more stacks: 0 160 0 0 (added changed replaced removed)"
    assert lines[-1].endswith("more replacement and IAM lines: see the sections below")


# --- end to end ---------------------------------------------------------------------------------------------


def _cpu_profile(repo: Path) -> None:
    path = repo / "config" / "models" / "image-classifier.yaml"
    text = path.read_text()
    assert text.count("  profile: eia\n") == 1
    path.write_text(text.replace("  profile: eia\n", "  profile: cpu\n"))


def _diff(repo: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra_diff", "--base", "HEAD", *args], cwd=repo, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "INFRA_DIFF_CACHE": str(cache)})


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory):
    """The committed tiny classifier; the working tree switches its profile eia -> cpu. Diffed twice, same cache."""
    root = tmp_path_factory.mktemp("infra-diff-cache")
    repo = committed_copy(root / "repo", _tiny_classifier_only)
    _cpu_profile(repo)
    cache = root / "cache"
    cold = _diff(repo, cache)
    warm = _diff(repo, cache)
    return repo, cache, cold, warm


@pytest.mark.slow
def test_a_warm_run_synthesizes_nothing_and_reports_the_same(cold_and_warm):
    repo, cache, cold, warm = cold_and_warm
    assert cold.returncode == 1, cold.stdout + cold.stderr
    sha = _git(repo, "rev-parse", "HEAD").strip()
    assert "synthesizing base " in cold.stderr and "synthesizing working tree" in cold.stderr and "diffing Dev/Serving" in cold.stderr
    assert warm.returncode == 1, warm.stdout + warm.stderr
    assert f"base: cached assembly for commit {sha[:12]} " in warm.stderr
    assert "head: cached assembly for working tree " in warm.stderr
    assert "synthesizing" not in warm.stderr and "diffing" not in warm.stderr  # no synthesis, no cdk diff process
    assert warm.stdout == cold.stdout
    # The cache lives where it was told; the checkout has nothing new (build/, cdk.out/, files).
    assert list((cache / "assemblies").iterdir()) and not (repo / "build").exists() and not (repo / "cdk.out").exists()
    assert _git(repo, "status", "--porcelain") == " M config/models/image-classifier.yaml\n"


@pytest.mark.slow
def test_the_summary_on_top_counts_replacements_and_names_iam_changes_of_the_real_diff(cold_and_warm):
    repo, cache, cold, _ = cold_and_warm
    top = cold.stdout.split("\n=== ", 1)[0]
    # The profile switch: a new image and instance type replace the Model and the EndpointConfig; the execution
    # role's policy names the new image repository.
    row = re.search(r"^  Dev/Serving +(\d+) +(\d+) +(\d+) +(\d+)$", top, re.M)
    assert row and int(row.group(3)) == 2, top
    assert re.search(r"^ +replaced: ImageClassifierServingModel\w+ \(AWS::SageMaker::Model\): PrimaryContainer", top, re.M)
    assert re.search(r"^ +replaced: ImageClassifierServingEndpointConfig\w+ \(AWS::SageMaker::EndpointConfig\): ProductionVariants",
                     top, re.M)
    assert re.search(r"^ +IAM: ~ ImageClassifierExecutionRoleDefaultPolicy\w+ \(AWS::IAM::Policy\): PolicyDocument$", top, re.M)
    # The pipeline's runtime-export build moves to the cpu runtime's project: new logical IDs, so replaced, IAM role included.
    assert re.search(r"^ +IAM: ~ PipelineBuildRuntimeExporteiapytorch151Role\w+ \(AWS::IAM::Role\): replaced by "
                     r"PipelineBuildRuntimeExportpytorch260Role\w+$", top, re.M)
    assert len(top.splitlines()) < 50  # one screen
    markdown = _diff(repo, cache, "--markdown")  # from the cache: fast
    assert markdown.returncode == 1 and "| stack | added | changed | replaced | removed | replacements and IAM changes |" in markdown.stdout
    assert re.search(r"^\| `Dev/Serving` \| \d+ \| \d+ \| 2 \| \d+ \| replaced: ImageClassifierServingModel", markdown.stdout, re.M)


@pytest.mark.slow
def test_a_new_base_commit_is_synthesized_again_and_the_unchanged_working_tree_is_not(cold_and_warm):
    repo, cache, cold, _ = cold_and_warm
    _git(repo, *IDENTITY, "commit", "--quiet", "--allow-empty", "-m", "the same tree, another commit")
    again = _diff(repo, cache)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "synthesizing base " in again.stderr and "base: cached assembly" not in again.stderr
    assert "head: cached assembly for working tree " in again.stderr and "synthesizing working tree" not in again.stderr
    assert again.stdout.split("\n", 1)[1] == cold.stdout.split("\n", 1)[1]  # only the header's sha differs
