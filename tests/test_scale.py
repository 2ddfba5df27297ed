"""A hundred models: placement over several serving stacks, the quota check, and synthesis failures that say why."""
import json
import sys
from pathlib import Path

import pytest
import yaml

from config import ConfigError, load_config
from config.placement import serving_stack_id, serving_stack_of
from stacks import cloudformation_quotas
from tests.conftest import REPO, make_config

NAMES = [f"model-{i:03d}" for i in range(1, 201)]


# ---------------------------------------------------------------- placement


def test_placement_depends_on_the_name_and_the_count_only():
    placed = {name: serving_stack_of(name, 16) for name in NAMES}
    assert set(placed.values()) == set(range(1, 17))  # every stack used at 200 models
    # Removing or adding models moves no other: each place is computed from its own name.
    assert {name: serving_stack_of(name, 16) for name in NAMES[:50]} == {name: placed[name] for name in NAMES[:50]}
    # The same on any machine: sha256, not Python's salted hash().
    assert [serving_stack_of(name, 16) for name in ("image-classifier", "object-detector", "model-001")] == [7, 1, 2]


def test_raising_the_count_moves_only_the_models_the_new_stack_wins():
    moved = [name for name in NAMES if serving_stack_of(name, 16) != serving_stack_of(name, 17)]
    assert moved and all(serving_stack_of(name, 17) == 17 for name in moved)
    assert len(moved) < len(NAMES) / 8  # about 1 in 17


def test_100_models_leave_every_stack_far_from_cloudformations_quota():
    loads = [sum(serving_stack_of(name, 16) == k for name in NAMES[:100]) for k in range(1, 17)]
    assert max(loads) <= 12  # 12 models x 14 resources + 5 shared = 173 of 500


def test_stack_ids_keep_the_first_stacks_name():
    assert [serving_stack_id(n) for n in (1, 2, 16)] == ["Serving", "Serving02", "Serving16"]


def test_the_shipped_models_are_pinned_to_the_stack_their_endpoints_live_in():
    config = load_config(REPO / "config")
    for env in config.environments:
        assert [m.serving_stack for m in env.models] == [1, 1]
        assert list(env.serving_stacks(with_smoke_test_role=True)) == [1]


def _with_model(tmp_path, name, **changes):
    config_dir = make_config(tmp_path / "config")
    model = yaml.safe_load((config_dir / "models" / "image-classifier.yaml").read_text())
    model.pop("serving_stack")
    model.update(changes)
    (config_dir / "models" / f"{name}.yaml").write_text(yaml.safe_dump(model))
    return config_dir


def test_a_model_without_a_pin_is_placed_by_its_name(tmp_path):
    config = load_config(_with_model(tmp_path, "model-001"))
    env = config.environment("dev")
    assert {m.name: m.serving_stack for m in env.models} == {"image-classifier": 1, "model-001": serving_stack_of("model-001", 16)}
    assert list(env.serving_stacks()) == [1, serving_stack_of("model-001", 16)]


def test_a_pin_beyond_the_stack_count_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_config(_with_model(tmp_path, "model-001", serving_stack=17))
    message = str(refused.value)
    assert "model-001.yaml: serving_stack: 17" in message and "serving_stacks: 16" in message and "pin it to 1-16" in message


def test_more_stacks_than_the_pipeline_can_deploy_is_refused(tmp_path):
    config_dir = make_config(tmp_path / "config")
    (config_dir / "app.yaml").write_text("serving_stacks: 19\n")
    with pytest.raises(ConfigError, match=r"serving_stacks.*less than or equal to 18"):
        load_config(config_dir)


# ---------------------------------------------------------------- quota check


def _template(tmp_path, name, resources=1, outputs=0, pipeline_actions=None, stage="Dev") -> Path:
    template = {"Resources": {f"R{i}": {"Type": "AWS::SNS::Topic"} for i in range(resources)},
                "Outputs": {f"O{i}": {"Value": "x"} for i in range(outputs)}}
    if pipeline_actions is not None:
        template["Resources"]["P"] = {"Type": "AWS::CodePipeline::Pipeline", "Properties": {"Stages": [
            {"Name": "Source", "Actions": [{}]}, {"Name": stage, "Actions": [{}] * pipeline_actions}]}}
    path = tmp_path / f"{name}.template.json"
    path.write_text(json.dumps(template))
    return path


def test_the_quota_check_refuses_over_a_quota_and_warns_above_the_headroom(tmp_path):
    stacks = [("Dev/Serving", _template(tmp_path, "a", resources=501)), ("Dev/Serving02", _template(tmp_path, "b", resources=401)),
              ("Dev/Serving03", _template(tmp_path, "c", resources=400, outputs=161)), ("Pipeline", _template(tmp_path, "p", pipeline_actions=51))]
    errors, warnings = cloudformation_quotas.check(stacks)
    assert [e.split(":")[0] for e in errors] == ["Dev/Serving", "Pipeline"]
    assert "501 template resources of CloudFormation's 500 (100%)" in errors[0] and "raise serving_stacks" in errors[0]
    assert "51 actions in pipeline stage Dev of CodePipeline's 50" in errors[1] and "lower serving_stacks" in errors[1]
    assert [w.split(":")[0] for w in warnings] == ["Dev/Serving02", "Dev/Serving03"]
    assert "161 template outputs" in warnings[1]
    assert cloudformation_quotas.check([("Dev/Serving03", _template(tmp_path, "d", resources=400, outputs=160))]) == ([], [])
    # CDK Pipelines' overflow stages (Assets.1, Assets.2: one action per model archive) are full by design, not a risk.
    assert cloudformation_quotas.check([("Pipeline", _template(tmp_path, "e", pipeline_actions=50, stage="Assets.1"))]) == ([], [])
    assert cloudformation_quotas.check([("Pipeline", _template(tmp_path, "f", pipeline_actions=41, stage="Assets"))])[1]


def test_the_quota_check_counts_template_bytes(tmp_path):
    big = tmp_path / "big.template.json"
    big.write_text(json.dumps({"Resources": {"R": {"Type": "AWS::SNS::Topic", "Metadata": {"x": "y" * 1_000_001}}}}))
    errors, _ = cloudformation_quotas.check([("Dev/Serving", big)])
    assert len(errors) == 1 and "template bytes" in errors[0]


# ---------------------------------------------------------------- synthesis failures say why


BREAKING_APP = """
import sys
sys.path.insert(0, {repo!r})
import app

def add_stages(cdk_app, *args, **kwargs):  # instead of the environments: only the construct under test
{break_app}

app.add_stages = add_stages
sys.exit(app.main())
"""


def _run_app(tmp_path, config_dir, break_app: str):
    """app.py's main() as `cdk synth` runs it (a process of its own, context from the environment), its stages
    replaced by `break_app` (indented code adding constructs to `cdk_app`): the failure handling is app.py's."""
    import os
    import subprocess
    import textwrap

    script = tmp_path / "breaking_app.py"
    script.write_text(BREAKING_APP.format(repo=str(REPO), break_app=textwrap.indent(textwrap.dedent(break_app), "    ")))
    context = {**json.loads((REPO / "cdk.json").read_text())["context"], "config_dir": str(config_dir)}
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path / "out"), "CDK_CONTEXT_JSON": json.dumps(context)}
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def test_a_construct_error_prints_its_own_reason(tmp_path, eia_config):
    status, err = _run_app(tmp_path, eia_config, """
        import jsii
        from aws_cdk import Stack
        from constructs import IValidation

        @jsii.implements(IValidation)
        class Refuses:
            def validate(self):
                return ["the bad construct's own reason"]

        Stack(cdk_app, "Broken").node.add_validation(Refuses())
    """)
    assert status == 1
    assert "Synthesis failed (nothing was synthesized or deployed)" in err
    assert "[Broken] the bad construct's own reason" in err
    assert "report above" not in err  # no pointer to a report that was never printed


def test_a_policy_finding_points_to_the_printed_report(tmp_path, eia_config):
    status, err = _run_app(tmp_path, eia_config, """
        from aws_cdk import Stack, Validations, aws_sqs
        from cdk_nag import AwsSolutionsChecks
        aws_sqs.Queue(Stack(cdk_app, "Broken"), "Queue")
        Validations.of(cdk_app).add_plugins(AwsSolutionsChecks(cdk_app))  # as stacks.application does
    """)
    assert status == 1
    assert "AwsSolutions-SQS4" in err  # the report itself, printed by the validation plugin
    assert "Synthesis refused by policy validation: the report above lists each finding" in err


def test_a_stack_over_a_quota_is_refused_by_app_py_before_any_deploy(tmp_path, eia_config):
    status, err = _run_app(tmp_path, eia_config, """
        from aws_cdk import CfnWaitConditionHandle, Stack
        crowded, spacious = Stack(cdk_app, "Crowded"), Stack(cdk_app, "Spacious")
        for i in range(250):  # 250 resources, but over 1 MB of template: the CDK counts resources only
            CfnWaitConditionHandle(crowded, f"Handle{i}").cfn_options.metadata = {"note": "x" * 4000}
        for i in range(401):
            CfnWaitConditionHandle(spacious, f"Handle{i}")
    """)
    assert status == 1
    assert "Warning: Spacious: 401 template resources of CloudFormation's 500 (80%): above the 80 % headroom" in err
    assert "Synthesis refused: over a quota (nothing was deployed):\nCrowded: " in err
    assert "template bytes of CloudFormation's 1000000" in err and "raise serving_stacks in config/app.yaml" in err


# ---------------------------------------------------------------- 100 models x 3 environments, with the pipeline


def _cfn_lint_in_parallel(files, processes=2):
    """`make lint`'s cfn-lint (same ignores), over `processes` slices of the files at once."""
    import subprocess

    command = [str(REPO / ".venv" / "bin" / "cfn-lint"), "--ignore-checks", "E3002", "W3005", "--"]
    runs = [subprocess.Popen([*command, *map(str, files[i::processes])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(processes)]
    return [(run.wait(timeout=900), run.stdout.read()) for run in runs]


@pytest.mark.slow
def test_100_models_in_3_environments_synthesize_with_the_pipeline_within_quotas_clean_under_cdk_nag_and_cfn_lint(tmp_path):
    import os
    import subprocess

    from benchmarks.generated_config import generate_config, model_name
    from infra_diff.assembly import read_stacks
    from tests.test_cdk_cli import _cdk_synth

    config = generate_config(tmp_path / "config", 100)
    built = subprocess.run([sys.executable, "-m", "model_artifacts", "build", "--config", str(config), "--out", str(tmp_path / "artifacts")],
                           cwd=REPO, env={**os.environ, "CI": "1"}, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    synth = _cdk_synth(config, tmp_path / "artifacts", tmp_path / "out", timeout=1500)
    # cdk-nag runs as a policy-validation plugin: a finding fails synthesis. No quota warning either.
    assert synth.returncode == 0, (synth.stdout + synth.stderr)[-3000:]
    assert cloudformation_quotas.HEADROOM_EXCEEDED not in synth.stderr

    stacks = read_stacks(tmp_path / "out")
    used = sorted({serving_stack_of(model_name(i), 16) for i in range(1, 101)})
    for stage in ("Dev", "Staging", "Prod"):
        assert sorted(name for name in stacks if name.startswith(f"{stage}/Serving")) == [f"{stage}/{serving_stack_id(n)}" for n in used]
    endpoints = [r for s in stacks.values() for r in s.template["Resources"].values() if r["Type"] == "AWS::SageMaker::Endpoint"]
    assert len(endpoints) == 300
    for quota, usage in cloudformation_quotas.largest((name, s.template_file) for name, s in stacks.items()).items():
        assert usage.share <= 0.8, usage.describe()

    (pipeline,) = [r["Properties"] for r in stacks["Pipeline"].template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    actions = {stage["Name"]: stage["Actions"] for stage in pipeline["Stages"]}
    (synth_action,) = [a for a in actions["Build"] if a["Name"] == "Synth"]
    assert len(synth_action["InputArtifacts"]) == 2  # the source + one runtime's exports of all 100 models
    for stage in ("Staging", "Prod"):
        assert [a["Name"] for a in actions[stage] if a["Name"].startswith("SmokeTest")] == ["SmokeTest"]

    lint = _cfn_lint_in_parallel(sorted((tmp_path / "out").glob("**/*.template.json")))
    assert [status for status, _ in lint] == [0, 0], "\n".join(output[-3000:] for _, output in lint)
