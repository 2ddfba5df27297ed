"""`make diff` at 100 models: a change to model files builds and synthesizes only those models, on both sides.

A throwaway repository with the committed code and 100 generated tiny models (benchmarks/generated_config.py). The
99 models no test touches point at weights that do not exist: building any of them fails, and synthesizing one
that was not built fails too (no artifact), so a diff that succeeds has built and synthesized only the models whose
files changed, whatever the number of the others."""
import re
import shutil

import pytest
import yaml

from benchmarks.generated_config import generate_config, model_name
from tests.test_infra_diff import _git, _infra_diff, committed_copy

MODELS = 100
CHANGED, REMOVED, ADDED = model_name(42), model_name(100), model_name(101)
TRAP = "models/absent-weights.pth"  # a full build stops here: "build.weights = ...: no such file"


def _hundred_models(repo):
    generated = generate_config(repo.parent / "generated", MODELS, pipeline=False)
    (repo / "config" / "pipeline.yaml").unlink(missing_ok=True)
    shutil.rmtree(repo / "config" / "models")
    shutil.copytree(generated / "models", repo / "config" / "models")  # the committed environments and app.yaml stay
    for path in (repo / "config" / "models").glob("*.yaml"):
        if path.stem not in (CHANGED, REMOVED):
            model = yaml.safe_load(path.read_text())
            model["build"]["weights"] = TRAP
            path.write_text(yaml.safe_dump(model))


@pytest.fixture(scope="module")
def hundred_model_repo(tmp_path_factory):
    """Committed: 100 models. Working tree: model-042's max_instances 2 -> 3 (unstaged), model-100's file deleted,
    model-101's file new and untracked."""
    repo = committed_copy(tmp_path_factory.mktemp("infra-diff-scale") / "repo", _hundred_models)
    models = repo / "config" / "models"
    shutil.copy(models / f"{REMOVED}.yaml", models / f"{ADDED}.yaml")
    (models / f"{REMOVED}.yaml").unlink()
    model = yaml.safe_load((models / f"{CHANGED}.yaml").read_text())
    model["scaling"]["max_instances"] = 3
    (models / f"{CHANGED}.yaml").write_text(yaml.safe_dump(model))
    return repo


@pytest.mark.slow
def test_a_change_to_model_files_among_100_builds_and_synthesizes_only_those_models(hundred_model_repo):
    result = _infra_diff(hundred_model_repo, "--base", "HEAD")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    scope = (f"scope: model files only ({CHANGED}, {REMOVED}, {ADDED}); the other 98 models' files are unchanged, "
             "so neither side builds or synthesizes them")
    assert out.splitlines()[1] == scope
    assert out.endswith(f" Scope: model files only ({CHANGED}, {REMOVED}, {ADDED}); the other 98 models' files are "
                        "unchanged, so neither side builds or synthesizes them.\n")
    # Each side built the changed models it has, and nothing else (the others would have failed on their weights).
    assert "building artifacts for base " in result.stderr and f"({CHANGED}, {REMOVED}) ..." in result.stderr
    assert f"building artifacts for working tree ({CHANGED}, {ADDED}) ..." in result.stderr
    # Every stage removes model-100's endpoint and adds model-101's; model-042's max_instances shows where no
    # environment overrides it. Stacks are found by stage, not by name (which stack holds a model may change).
    sections = dict(re.findall(r"^=== (\S+): [^\n]* ===\n(.*?)(?=^=== |\n\d+ stacks? with differences)", out, re.S | re.M))
    for stage in ("Dev", "Staging", "Prod"):
        text = "".join(body for name, body in sections.items() if name.startswith(f"{stage}/"))
        # cdk diff's line in a stack that keeps other changed models, or the removed stack's list when model-100 was
        # the only changed model in its serving stack.
        assert re.search(r"^\[-\] AWS::SageMaker::Endpoint (\S+ )?Model100ServingEndpoint\w+( destroy)?$", text, re.M), stage
        assert re.search(rf"^WARNING Model100ServingEndpoint\w+ \(AWS::SageMaker::Endpoint, EndpointName {stage}-Serving-"
                         rf"{REMOVED}\): removed, so CloudFormation deletes it$", text, re.M), stage
        assert re.search(r"^\[\+\] AWS::SageMaker::Endpoint \S+ Model101ServingEndpoint\w+$", text, re.M), stage
    assert re.search(r"Model042AutoscalingTarget\w+\n └─ \[~\] MaxCapacity\n +├─ \[-\] 2\n +└─ \[\+\] 3\n", out)
    other_models = {f"model-{n}" for n in re.findall(r"(?<![A-Za-z0-9])(?:model-|Model)(\d{3})", out)} - {CHANGED, REMOVED, ADDED}
    assert not other_models, sorted(other_models)
    _assert_left_nothing_behind_but_the_edits(hundred_model_repo)


def test_any_other_changed_file_among_100_models_means_the_full_build(hundred_model_repo):
    """An environment file beside the model files: everything is built, and the untouched models' trap springs."""
    dev = hundred_model_repo / "config" / "environments" / "dev.yaml"
    original = dev.read_text()
    try:
        dev.write_text(original + "\n# a comment is a change\n")
        result = _infra_diff(hundred_model_repo, "--base", "HEAD")
    finally:
        dev.write_text(original)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "scope: everything (config/environments/dev.yaml differs from the base, not only model files)" in result.stderr
    assert TRAP in result.stderr and "no such file" in result.stderr and "Traceback" not in result.stderr
    _assert_left_nothing_behind_but_the_edits(hundred_model_repo)


def _assert_left_nothing_behind_but_the_edits(repo):
    assert len(_git(repo, "worktree", "list").splitlines()) == 1
    assert not (repo / "build").exists() and not (repo / "cdk.out").exists()
    assert sorted(_git(repo, "status", "--porcelain").splitlines()) == sorted(
        [f" M config/models/{CHANGED}.yaml", f" D config/models/{REMOVED}.yaml", f"?? config/models/{ADDED}.yaml"])
