"""The real CDK CLI from package.json, offline, as `make synth` runs it."""
import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO, make_config

pytestmark = pytest.mark.slow


def _cdk_synth(config_dir, artifacts_dir, outdir):
    if not (REPO / "node_modules" / ".bin" / "cdk").exists() or not shutil.which("npx"):
        pytest.fail("the local CDK CLI is missing: run `make setup` (npm ci)")
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    env.pop("AWS_PROFILE", None)
    return subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "**", "--quiet", "--no-notices",
         "-c", f"config_dir={config_dir}", "-c", f"artifacts_dir={artifacts_dir}", "-o", str(outdir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_cli_synthesizes_every_environment_and_warns_about_eia(eia_config, eia_artifacts, tmp_path):
    result = _cdk_synth(eia_config, eia_artifacts, tmp_path / "cdk.out")
    assert result.returncode == 0, result.stdout + result.stderr
    templates = sorted(p.parent.name + "/" + p.name for p in (tmp_path / "cdk.out").glob("assembly-*/*.template.json"))
    assert [t.split("/")[0] for t in templates] == ["assembly-Dev"] * 2 + ["assembly-Prod"] * 2 + ["assembly-Staging"] * 2
    output = result.stdout + result.stderr
    assert "Elastic Inference" in output and "serving.profile: gpu" in output


def test_cli_refuses_a_bad_config_with_a_message_and_no_traceback(tmp_path, eia_artifacts):
    config = make_config(tmp_path / "config", lambda m: m["serving"]["profiles"]["eia"].update(accelerator_type="ml.eia9.medium"))
    result = _cdk_synth(config, eia_artifacts, tmp_path / "cdk.out")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "accelerator_type = 'ml.eia9.medium'" in output and "ml.eia2.medium" in output
    assert "Traceback" not in output
    assert not list((tmp_path / "cdk.out").glob("assembly-*/*.template.json"))  # nothing half-synthesized
