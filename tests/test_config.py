"""Configuration: the shipped example, and every refusal naming the key, the value and the fix."""
import re

import pytest

from config import ConfigError, load_config
from tests.conftest import REPO, make_config


def test_shipped_config_is_the_seed_example():
    config = load_config(REPO / "config")
    assert [env.name for env in config.environments] == ["dev", "staging", "prod"]
    target = config.environment("dev").models[0].target
    assert (target.profile, target.instance_type, target.accelerator_type) == ("eia", "ml.m5.large", "ml.eia2.medium")
    assert target.image_uri == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference-eia:1.5.1-cpu-py3"
    assert target.recipe == "eia-1.5"  # the seed: script for 1.5.1


def test_environment_scaling_overrides_model_defaults():
    config = load_config(REPO / "config")
    assert config.environment("dev").models[0].scaling.max_instances == 1
    assert config.environment("staging").models[0].scaling.max_instances == 2
    assert config.environment("prod").models[0].scaling.max_instances == 4


def test_eia_1_3_1_uses_the_trace_recipe(tmp_path):
    directory = make_config(tmp_path / "c", lambda m: m["serving"]["profiles"]["eia"].update(framework_version="1.3.1"))
    target = load_config(directory).environment("dev").models[0].target
    assert target.recipe == "eia-1.3"  # the seed: trace for 1.3.1
    assert target.image_uri.endswith("pytorch-inference-eia:1.3.1-cpu-py3")


def test_gpu_profile_is_one_line(tmp_path):
    directory = make_config(tmp_path / "c", lambda m: m["serving"].update(profile="gpu"))
    target = load_config(directory).environment("prod").models[0].target
    assert target.accelerator_type is None
    assert target.instance_type == "ml.g4dn.xlarge"
    assert target.image_uri == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-gpu-py312"


def _recipe(recipe, profile, **settings):
    def change(model):
        model["serving"]["profile"] = profile
        model["serving"].setdefault("profiles", {}).setdefault(profile, {}).update(settings)
        model.setdefault("build", {})["recipe"] = recipe
    return change


@pytest.mark.parametrize("recipe, profile, settings, message", [
    ("aoti", "eia", {}, r"build.recipe = 'aoti' compiles the model for x86-64 CPUs, but serving.profile is 'eia' \(the accelerator "
                        r"runs TorchScript only\); use build.recipe: auto .*or serve on serving.profile: cpu or serverless"),
    ("aoti", "gpu", {}, r"serving.profile is 'gpu' \(the package would not use the GPU\)"),
    ("aoti", "cpu", {"instance_type": "ml.c7g.xlarge"}, r"'ml.c7g.xlarge' is an Arm \(Graviton\) instance; .*ml.c5.xlarge"),
    ("aoti", "cpu", {"framework_version": "2.5.1"}, r"needs torch >= 2.6 .*framework_version is '2.5.1'.*set framework_version: 2.6.0"),
    ("optimized", "gpu", {}, r"build.recipe = 'optimized' freezes weights as CPU constants"),
    ("optimized", "eia", {}, r"needs torch.jit.freeze and optimize_for_inference, which the EIA torch 1.5.1 runtime lacks"),
    ("eia-1.3", "cpu", {}, r"'eia-1.3' is for the Elastic Inference torch 1.3 runtime, but this model serves on cpu 2.6.0"),
])
def test_a_recipe_the_runtime_cannot_run_is_refused_with_the_reason(tmp_path, recipe, profile, settings, message):
    assert re.search(message, _error(tmp_path, _recipe(recipe, profile, **settings))), _error(tmp_path, _recipe(recipe, profile, **settings))


@pytest.mark.parametrize("recipe, profile, expected", [
    ("auto", "cpu", "optimized"), ("auto", "serverless", "optimized"), ("auto", "gpu", "trace"), ("auto", "eia", "eia-1.5"),
    ("aoti", "cpu", "aoti"), ("aoti", "serverless", "aoti"), ("optimized", "serverless", "optimized"), ("script", "gpu", "script"),
])
def test_the_recipe_each_profile_builds(tmp_path, recipe, profile, expected):
    """auto on the CPU profiles is what the latency benchmark measured (config/serving_targets.MEASURED_CPU_RECIPES)."""
    target = load_config(make_config(tmp_path / "c", _recipe(recipe, profile))).environment("dev").models[0].target
    assert target.recipe == expected


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


@pytest.mark.parametrize("key, value, minimum", [
    ("initial_instance_count", 0, 1),  # an inference component is created with at least one copy
    ("max_instances", 0, 1),
    ("min_instances", -1, 0),  # 0 is scale to zero (tests/test_scale_to_zero.py)
])
def test_instance_counts_below_one(tmp_path, key, value, minimum):
    message = _error(tmp_path, lambda m: m["scaling"].update({key: value}))
    assert f"scaling.{key} = {value}" in message and f"greater than or equal to {minimum}" in message


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
    message = _error(tmp_path, lambda m: m["serving"].update(limits={"max_request_bytes": 7 * 1024 * 1024}))
    assert "serving.limits.max_request_bytes" in message and "6291456" in message


def test_an_image_limit_above_pillows_own_is_refused(tmp_path):
    message = _error(tmp_path, lambda m: m["serving"].update(limits={"max_image_pixels": 100_000_000}))
    assert "serving.limits.max_image_pixels" in message and "89478485" in message


def test_an_unknown_limit_key_is_refused(tmp_path):
    message = _error(tmp_path, lambda m: m["serving"].update(limits={"max_images": 4}))
    assert "serving.limits.max_images" in message


def test_traffic_shifting_on_eia_is_refused_with_the_alternatives(tmp_path):
    message = _error(tmp_path, lambda m: m["serving"].update(deployment={"strategy": "canary"}))
    assert "serving.deployment.strategy = 'canary'" in message
    assert "all_at_once" in message and "serving.profile: gpu" in message


def test_deployment_strategy_auto_resolves_per_profile(tmp_path):
    eia = load_config(make_config(tmp_path / "eia")).environment("dev").models[0]
    gpu = load_config(make_config(tmp_path / "gpu", lambda m: m["serving"].update(profile="gpu"))).environment("dev").models[0]
    assert (eia.deployment_strategy, gpu.deployment_strategy) == ("all_at_once", "canary")


# ------------------------------------------------------------ the validation matrix of the successor profiles


def _serverless(**settings):
    def change(model):
        model["serving"]["profile"] = "serverless"
        model["serving"]["profiles"]["serverless"].update(settings)
    return change


def test_serverless_is_one_line_and_resolves_the_sdk_cpu_image(tmp_path):
    deployment = load_config(make_config(tmp_path / "c", lambda m: m["serving"].update(profile="serverless"))).environment("prod").models[0]
    target = deployment.target
    assert (target.instance_type, target.accelerator_type) == (None, None)
    assert (target.memory_size_mb, target.max_concurrency) == (3072, 10)
    assert target.image_uri == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
    assert target.network_isolation is False  # serverless does not support it
    assert deployment.autoscaling is False


def test_accelerator_on_serverless(tmp_path):
    message = _error(tmp_path, _serverless(accelerator_type="ml.eia2.medium"))
    assert "serving.profiles.serverless.accelerator_type = 'ml.eia2.medium'" in message and "only to the eia profile" in message


def test_instance_type_on_serverless(tmp_path):
    message = _error(tmp_path, _serverless(instance_type="ml.c5.xlarge"))
    assert "serverless endpoints have no instance type" in message and "memory_size_mb" in message


def test_serverless_with_autoscaling_in_the_model_file(tmp_path):
    def change(model):
        _serverless()(model)
        model["scaling"]["autoscaling"] = True

    message = _error(tmp_path, change)
    assert "scaling.autoscaling = true with serving.profile: serverless" in message and "max_concurrency" in message


def test_serverless_with_autoscaling_from_an_environment(tmp_path):
    message = _error(tmp_path, _serverless(), env_changes={"prod": lambda e: e["scaling"].update(autoscaling=True)})
    assert "prod.yaml: scaling.autoscaling = true" in message and "serverless" in message


@pytest.mark.parametrize("memory", [512, 1536, 7168])
def test_serverless_memory_out_of_range(tmp_path, memory):
    message = _error(tmp_path, _serverless(memory_size_mb=memory))
    assert f"serving.profiles.serverless.memory_size_mb = {memory}" in message
    assert "1024" in message or "6144" in message


def test_serverless_concurrency_out_of_range(tmp_path):
    assert "serving.profiles.serverless.max_concurrency = 500" in _error(tmp_path, _serverless(max_concurrency=500))


def test_serverless_keys_on_an_instance_profile(tmp_path):
    message = _error(tmp_path, _set_eia(memory_size_mb=2048))
    assert "serving.profiles.eia.memory_size_mb applies only to serving.profile: serverless" in message


def test_network_isolation_on_serverless(tmp_path):
    def change(model):
        _serverless()(model)
        model["serving"]["network_isolation"] = True

    assert "serverless endpoints do not support network isolation" in _error(tmp_path, change)


@pytest.mark.parametrize("instance_type, suggestion", [("ml.c5.huge", "ml.c5.large"), ("ml.m5.larg", "ml.m5.large"), ("ml.zz99.tiny", None)])
def test_instance_types_sagemaker_hosting_does_not_offer(tmp_path, instance_type, suggestion):
    def change(model):
        model["serving"]["profile"] = "cpu"
        model["serving"]["profiles"]["cpu"]["instance_type"] = instance_type

    message = _error(tmp_path, change)
    assert f"instance_type = '{instance_type}' is not an instance type SageMaker hosting offers" in message
    assert (suggestion in message) if suggestion else "did you mean" not in message


def test_kms_on_local_nvme_storage_can_be_refused_by_config(tmp_path):
    def change(model):
        model["serving"].update(profile="gpu", kms_on_local_storage="refuse")

    message = _error(tmp_path, change)
    assert "'ml.g4dn.xlarge' has local NVMe instance storage" in message
    assert "serving.kms_on_local_storage is 'refuse'" in message and "'drop'" in message


def test_the_local_storage_families_have_a_source():
    import json

    data = json.loads((REPO / "config" / "data" / "local_storage_instance_families.json").read_text())
    assert "CreateEndpointConfig" in data["_source"] and "KmsKeyId" in data["_source"]
    assert {"g4dn", "g5", "c5d", "m5d"} <= set(data["families"]) and not {"m5", "c5"} & set(data["families"])


def test_the_readme_limits_table_matches_the_config_keys():
    """README "Request limits": one row per serving.limits key, with its default and the handler's variable."""
    from config.schema import RequestLimits
    from inference_src.request_handling import LIMITS_BY_KEY

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Request limits"):]
    rows = re.findall(r"^\| `(\w+)` \| (\d+)[^|]* \|[^|]*\| `(\w+)` \|$", section[:section.index("\n\n", section.index("| key |"))],
                      re.MULTILINE)
    assert {key: (int(default), env) for key, default, env in rows} == {
        key: (field.default, LIMITS_BY_KEY[key].env) for key, field in RequestLimits.model_fields.items()}


# ------------------------------------------------------------ physical names: model and environment file names, name prefix


def _renamed_model(tmp_path, stem: str, name_prefix: str = None):
    directory = make_config(tmp_path / "c")
    (directory / "models" / "image-classifier.yaml").rename(directory / "models" / f"{stem}.yaml")
    if name_prefix is not None:
        (directory / "app.yaml").write_text(f"name_prefix: {name_prefix}\n")
    return directory


def test_a_model_file_name_sagemaker_refuses_as_an_endpoint_name(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(_renamed_model(tmp_path, "my_model"))
    message = str(raised.value)
    assert "my_model.yaml: the file name 'my_model' names the model's SageMaker endpoint (Dev-Serving-my_model)" in message
    assert "only letters, digits and hyphens" in message and "^[a-zA-Z0-9](-*[a-zA-Z0-9])*" in message
    assert message.endswith("rename the file, e.g. to my-model.yaml")


# The longest stage prefix is "Staging-Serving-" (16 characters): 63 - 16 = 47 are left for the model's name.
def test_the_longest_model_file_name_that_fits_every_stage(tmp_path):
    config = load_config(_renamed_model(tmp_path, "m" * 47))
    assert len(config.environment("staging").endpoint_name("m" * 47)) == 63


def test_a_model_file_name_too_long_for_the_longest_stage(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(_renamed_model(tmp_path, "m" * 48))
    message = str(raised.value)
    assert f"{'m' * 48}.yaml: the file name" in message
    assert "with the longest stage prefix, 'Staging-Serving-' (staging), that name is 64 characters, over SageMaker's limit of 63" in message
    assert message.endswith("rename the file to at most 47 characters")


def test_the_name_prefix_counts_in_the_length(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(_renamed_model(tmp_path, "m" * 47, name_prefix="sbx"))
    message = str(raised.value)
    assert "'sbx-Staging-Serving-'" in message and "at most 43 characters or shorten name_prefix" in message


def test_the_name_prefix_leads_every_name_and_the_command_line_overrides_the_file(tmp_path):
    directory = make_config(tmp_path / "c")
    assert load_config(directory).name_prefix == ""  # as shipped: the names as deployed
    (directory / "app.yaml").write_text("name_prefix: sbx\n")
    prod = load_config(directory).environment("prod")
    assert (prod.stack_name("Serving"), prod.endpoint_name("image-classifier")) == ("sbx-Prod-Serving", "sbx-Prod-Serving-image-classifier")
    assert (prod.smoke_test_role_name, prod.pipeline_smoke_test_role_name) == ("sbx-Prod-Serving-SmokeTest", "sbx-Pipeline-SmokeTest-Prod")
    config = load_config(directory, name_prefix="alice")
    assert config.name_prefix == "alice" and config.pipeline_stack_name == "alice-Pipeline"


@pytest.mark.parametrize("prefix", ["my_box", "-sbx", "sbx-", "a" * 21])
def test_a_name_prefix_that_cannot_lead_a_name(tmp_path, prefix):
    with pytest.raises(ConfigError) as raised:
        load_config(make_config(tmp_path / "c"), name_prefix=prefix)
    message = str(raised.value)
    assert "app.yaml (name_prefix from -c name_prefix=... or NAME_PREFIX): name_prefix" in message


def test_an_environment_file_name_that_cannot_name_a_stack(tmp_path):
    directory = make_config(tmp_path / "c")
    (directory / "environments" / "dev.yaml").rename(directory / "environments" / "my_dev.yaml")
    with pytest.raises(ConfigError) as raised:
        load_config(directory)
    message = str(raised.value)
    assert "my_dev.yaml: the file name 'my_dev' names the stage and its stacks (My_dev-Serving)" in message
    assert message.endswith("rename the file, e.g. to my-dev.yaml")
