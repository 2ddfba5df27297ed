"""The real CDK CLI from package.json, offline, as `make synth` runs it."""
import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO, make_config

pytestmark = pytest.mark.slow


def _cdk_synth(config_dir, artifacts_dir, outdir, timeout=300):
    if not (REPO / "node_modules" / ".bin" / "cdk").exists() or not shutil.which("npx"):
        pytest.fail("the local CDK CLI is missing: run `make setup` (npm ci)")
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "1", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    env.pop("AWS_PROFILE", None)
    return subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "**", "--quiet", "--no-notices",
         "-c", f"config_dir={config_dir}", "-c", f"artifacts_dir={artifacts_dir}", "-o", str(outdir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
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


def _checkout_copy(destination):
    """The working tree's tracked files at `destination`, sharing this checkout's venvs and node_modules."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    for shared in (".venv", ".venv-runtimes", "node_modules"):
        (destination / shared).symlink_to(REPO / shared)
    make_config(destination / "small-config")  # the tiny example model keeps the two builds fast
    return destination


def _synthesize_in(checkout):
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "PYTHONHASHSEED": "0"}
    python = str(checkout / ".venv" / "bin" / "python")
    subprocess.run([python, "-m", "model_artifacts", "build", "--config", "small-config", "--out", "build/artifacts"],
                   cwd=checkout, env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run(["npx", "--no-install", "cdk", "synth", "**", "--quiet", "--no-notices", "-c", "config_dir=small-config"],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return {str(p.relative_to(checkout / "cdk.out")): p.read_bytes() for p in sorted((checkout / "cdk.out").rglob("*")) if p.is_file()}


def test_the_same_commit_synthesizes_byte_identical_output_from_any_directory(tmp_path):
    first = _checkout_copy(tmp_path / "a")
    second = _checkout_copy(tmp_path / "somewhere" / "much" / "deeper" / "checkout")
    one, two = _synthesize_in(first), _synthesize_in(second)
    assert sorted(one) == sorted(two)
    assert [name for name in one if one[name] != two[name]] == []  # templates, asset manifests and hashes, metadata
    assert any(name.endswith("Pipeline.template.json") for name in one)
    assert sum(name.endswith(".assets.json") for name in one) == 7
    for name, content in one.items():
        text = content.decode(errors="replace")
        assert str(tmp_path) not in text and "jsii-kernel" not in text, name  # no absolute or temporary paths
        assert "aws:asset:path" not in text, name  # asset metadata is off
