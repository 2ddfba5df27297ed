"""The serving runtimes' venvs: each mirrors its image (Python, framework, pins), and whatever is missing is
refused with its fix, never skipped."""
import json
import os
import re
import subprocess
import sys

import pytest

from config import ConfigError
from runtimes import RUNTIMES, runtime_for
from tests.conftest import REPO, make_config

FRAMEWORK_MODULE = {"pytorch": "torch", "mxnet": "mxnet"}


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_each_runtime_venv_runs_its_image_s_python_and_framework(name):
    runtime = RUNTIMES[name]
    module = FRAMEWORK_MODULE[runtime.framework]
    probe = f"import sys, json, {module}; print(json.dumps(['%d.%d' % sys.version_info[:2], {module}.__version__]))"
    result = subprocess.run([str(runtime.require()), "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    python, framework = json.loads(result.stdout.strip().splitlines()[-1])
    assert (python, framework.split("+")[0]) == (runtime.python_version, runtime.framework_version)


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_each_runtime_venv_holds_exactly_its_pinned_requirements(name):
    runtime = RUNTIMES[name]
    pins = {}
    for line in runtime.requirements.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, separator, version = line.partition("==")
            assert separator, f"{runtime.requirements.name}: {line!r} is not pinned with =="
            pins[_canonical(package)] = version
    assert pins[_canonical(FRAMEWORK_MODULE[runtime.framework])] == runtime.framework_version
    freeze = subprocess.run([str(runtime.require()), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True)
    # A local version label (torch 2.6.0+cpu from the CPU index the pipeline adds) is the same release.
    installed = {k: v.split("+")[0] for k, v in (line.split("==") for line in freeze.stdout.splitlines() if "==" in line)}
    installed = {_canonical(k): v for k, v in installed.items() if _canonical(k) not in ("pip", "setuptools", "wheel")}
    pins = {k: v for k, v in pins.items() if k not in ("pip", "setuptools", "wheel")}
    assert installed == pins


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_configuration_names_the_runtimes_it_needs(tmp_path):
    from runtimes.__main__ import runtimes_for_config

    assert [r.name for r in runtimes_for_config(REPO / "config")] == ["eia-mxnet-1.4.1", "eia-pytorch-1.5.1"]
    cpu = make_config(tmp_path / "cpu", lambda m: m["serving"].update(profile="cpu"))
    assert [r.name for r in runtimes_for_config(cpu)] == ["pytorch-2.6.0"]


def test_a_framework_version_without_a_runtime_is_refused_with_the_choices():
    assert runtime_for("pytorch", "1.5.1", "eia").name == "eia-pytorch-1.5.1"
    with pytest.raises(ConfigError, match=r"model 'm': no local runtime mirrors the pytorch 2\.5\.0 inference image.*"
                                          r"runtimes: pytorch 1\.5\.1 \(eia\).*RUNTIME_EXPORT"):
        runtime_for("pytorch", "2.5.0", "cpu", where="model 'm'")


def test_a_missing_runtime_venv_fails_the_build_with_its_fix(tmp_path):
    """Not a skip, not a silent fallback to this machine's torch."""
    config = make_config(tmp_path / "config")
    env = {**os.environ, "SERVING_RUNTIMES_DIR": str(tmp_path / "no-venvs")}
    result = subprocess.run([sys.executable, "-m", "model_artifacts", "build", "--config", str(config), "--out", str(tmp_path / "out")],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the eia-pytorch-1.5.1 runtime (pytorch-inference-eia:1.5.1-cpu-py3, Python 3.6" in result.stderr
    assert "run `make runtimes`" in result.stderr
    assert not (tmp_path / "out" / "image-classifier" / "model.tar.gz").exists()


def test_a_missing_interpreter_names_the_variable_pyenv_and_the_docker_route(tmp_path, monkeypatch):
    from runtimes.__main__ import InterpreterMissing, find_interpreter

    runtime = RUNTIMES["eia-pytorch-1.5.1"]
    assert subprocess.run([str(find_interpreter(runtime)), "--version"], capture_output=True, text=True).stdout.startswith("Python 3.6")

    monkeypatch.setenv("PYTHON36", sys.executable)  # a Python, but not 3.6
    with pytest.raises(InterpreterMissing) as wrong:
        find_interpreter(runtime)
    assert f"PYTHON36={sys.executable} is not a working Python 3.6" in str(wrong.value)

    monkeypatch.delenv("PYTHON36")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InterpreterMissing) as missing:
        find_interpreter(runtime)
    message = str(missing.value)
    assert "needs Python 3.6, the Python of its image pytorch-inference-eia:1.5.1-cpu-py3" in message
    assert "pyenv install 3.6" in message and "PYTHON36=/path/to/python3.6" in message
    assert "docker run" in message and "model_artifacts.runtime_export" in message and "RUNTIME_EXPORT" in message


def test_setup_reports_a_missing_interpreter_in_one_line_and_an_up_to_date_venv_is_left_alone(tmp_path):
    env = {**os.environ, "PYTHON36": str(tmp_path / "python3.6")}
    result = subprocess.run([sys.executable, "-m", "runtimes", "setup", "eia-pytorch-1.3.1"], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "needs Python 3.6" in result.stderr

    result = subprocess.run([sys.executable, "-m", "runtimes", "setup", "eia-pytorch-1.3.1"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "runtime eia-pytorch-1.3.1: up to date" in result.stdout
