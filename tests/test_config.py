"""Configuration: the shipped example, and every refusal naming the key, the value and the fix."""
import pytest

from config import ConfigError, load_config
from tests.conftest import REPO, make_config


def test_shipped_config_is_the_seed_example():
    config = load_config(REPO / "config")
    assert [env.name for env in config.environments] == ["dev", "staging", "prod"]
    target = config.environment("dev").models[0].target
    assert (target.profile, target.instance_type, target.accelerator_type) == ("eia", "ml.m5.large", "ml.eia2.medium")
    assert target.image_uri == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference-eia:1.5.1-cpu-py3"
    assert target.recipe == "script"  # the seed: script for 1.5.1


def test_environment_scaling_overrides_model_defaults():
    config = load_config(REPO / "config")
    assert config.environment("dev").models[0].scaling.max_instances == 1
    assert config.environment("staging").models[0].scaling.max_instances == 2
    assert config.environment("prod").models[0].scaling.max_instances == 4


def test_eia_1_3_1_uses_the_trace_recipe(tmp_path):
    directory = make_config(tmp_path / "c", lambda m: m["serving"]["profiles"]["eia"].update(framework_version="1.3.1"))
    target = load_config(directory).environment("dev").models[0].target
    assert target.recipe == "trace"
    assert target.image_uri.endswith("pytorch-inference-eia:1.3.1-cpu-py3")


def test_gpu_profile_is_one_line(tmp_path):
    directory = make_config(tmp_path / "c", lambda m: m["serving"].update(profile="gpu"))
    target = load_config(directory).environment("prod").models[0].target
    assert target.accelerator_type is None
    assert target.instance_type == "ml.g4dn.xlarge"
    assert target.image_uri == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-gpu-py312"


def _error(tmp_path, model_change=lambda m: None, env_changes=None) -> str:
    directory = make_config(tmp_path / "c", model_change, env_changes)
    with pytest.raises(ConfigError) as raised:
        load_config(directory)
    return str(raised.value)


def _set_eia(**values):
    return lambda m: m["serving"]["profiles"]["eia"].update(values)


def test_unknown_key_names_the_key_and_the_accepted_ones(tmp_path):
    message = _error(tmp_path, lambda m: m["serving"].update(colour="red"))
    assert "image-classifier.yaml" in message
    assert "unknown key 'serving.colour'" in message
    assert "profile, profiles" in message


def test_unknown_profile_lists_the_profiles(tmp_path):
    message = _error(tmp_path, lambda m: m["serving"].update(profile="tpu"))
    assert "serving.profile = 'tpu'" in message and "'eia'" in message and "'gpu'" in message


def test_eia_in_a_region_without_eia_images(tmp_path):
    message = _error(tmp_path, env_changes={"staging": lambda e: e.update(region="sa-east-1")})
    assert "staging.yaml: region = 'sa-east-1'" in message
    assert "pytorch-inference-eia:1.5.1" in message
    assert "us-east-1" in message and "eu-west-1" in message  # regions that have it


@pytest.mark.parametrize("accelerator", ["ml.g4.medium", "ml.eia3.medium", "ml.eia2.huge"])
def test_accelerator_that_does_not_exist(tmp_path, accelerator):
    message = _error(tmp_path, _set_eia(accelerator_type=accelerator))
    assert f"accelerator_type = '{accelerator}'" in message
    assert "ml.eia2.medium" in message  # the accepted list


def test_framework_version_without_an_eia_image(tmp_path):
    message = _error(tmp_path, _set_eia(framework_version="1.4.0"))
    assert "framework_version = '1.4.0'" in message
    assert "accepted: 1.3.1, 1.5.1" in message


def test_gpu_instance_on_the_eia_profile(tmp_path):
    message = _error(tmp_path, _set_eia(instance_type="ml.g4dn.xlarge"))
    assert "instance_type = 'ml.g4dn.xlarge'" in message and "serving.profile: gpu" in message


def test_accelerator_on_the_gpu_profile(tmp_path):
    def change(model):
        model["serving"]["profile"] = "gpu"
        model["serving"]["profiles"]["gpu"]["accelerator_type"] = "ml.eia2.medium"

    message = _error(tmp_path, change)
    assert "serving.profiles.gpu.accelerator_type = 'ml.eia2.medium'" in message


def test_cpu_instance_on_the_gpu_profile(tmp_path):
    def change(model):
        model["serving"]["profile"] = "gpu"
        model["serving"]["profiles"]["gpu"]["instance_type"] = "ml.m5.large"

    assert "has no GPU" in _error(tmp_path, change)


@pytest.mark.parametrize("key", ["initial_instance_count", "min_instances", "max_instances"])
def test_instance_counts_below_one(tmp_path, key):
    message = _error(tmp_path, lambda m: m["scaling"].update({key: 0}))
    assert f"scaling.{key} = 0" in message and "greater than or equal to 1" in message


def test_min_greater_than_max(tmp_path):
    message = _error(tmp_path, lambda m: m["scaling"].update(min_instances=3, max_instances=2, initial_instance_count=3))
    assert "min_instances (3) is greater than max_instances (2)" in message


def test_environment_override_that_breaks_the_bounds(tmp_path):
    message = _error(tmp_path, env_changes={"dev": lambda e: e["scaling"].update(min_instances=2)})
    assert "dev.yaml: scaling" in message and "min_instances (2) is greater than max_instances (1)" in message


def test_bad_account_id(tmp_path):
    message = _error(tmp_path, env_changes={"prod": lambda e: e.update(account="12345")})
    assert "prod.yaml: account = '12345'" in message


def test_real_account_override_is_validated():
    config = load_config(REPO / "config")
    assert config.with_accounts({"prod": "999999999999"}).environment("prod").account == "999999999999"
    with pytest.raises(ConfigError, match="prod_account"):
        config.with_accounts({"prod": "not-an-account"})


def test_a_resize_smaller_than_the_model_input_names_the_minimum(tmp_path):
    message = _error(tmp_path, lambda m: m["build"].update(image_preprocessing={"resize_short_side": 32}))
    assert "resize_short_side (32) is smaller than the model input (64x64); set it to at least 64" in message


def test_a_request_limit_above_sagemakers_6_mib_is_refused(tmp_path):
    message = _error(tmp_path, lambda m: m["serving"].update(max_request_bytes=7 * 1024 * 1024))
    assert "serving.max_request_bytes" in message and "6291456" in message


def test_traffic_shifting_on_eia_is_refused_with_the_alternatives(tmp_path):
    message = _error(tmp_path, lambda m: m["serving"].update(deployment={"strategy": "canary"}))
    assert "serving.deployment.strategy = 'canary'" in message
    assert "all_at_once" in message and "serving.profile: gpu" in message


def test_deployment_strategy_auto_resolves_per_profile(tmp_path):
    eia = load_config(make_config(tmp_path / "eia")).environment("dev").models[0]
    gpu = load_config(make_config(tmp_path / "gpu", lambda m: m["serving"].update(profile="gpu"))).environment("dev").models[0]
    assert (eia.deployment_strategy, gpu.deployment_strategy) == ("all_at_once", "canary")
