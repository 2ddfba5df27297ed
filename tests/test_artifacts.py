"""The build step: contents, parity, reproducibility, staleness."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
import torch

from config import ConfigError, load_config
from model_artifacts import torchscript
from model_artifacts.manifest import load_built_artifact
from model_artifacts.runtime_export import ParityError, check_parity, convert
from tests.conftest import REPO, build_for, make_config


def test_tarball_holds_exactly_the_sagemaker_layout_with_fixed_metadata(eia_artifacts):
    with tarfile.open(eia_artifacts / "image-classifier" / "model.tar.gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["code/inference.py", "code/request_handling.py", "code/requirements.txt", "model.pt"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
        assert tar.extractfile("code/inference.py").read() == (REPO / "inference_src" / "inference.py").read_bytes()
        archive = tar.extractfile("model.pt").read()
    names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert not [n for n in names if n.endswith(".debug_pkl") or "traced_inputs" in n]
    assert all(n.startswith("archive/") for n in names)
    model_info = torchscript.read_extra_file(archive, "model_info.json")
    assert model_info["input_shape"] == [1, 3, 64, 64]
    assert model_info["image_preprocessing"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize_short_side": None}


def test_manifest_records_what_built_it_and_for_which_runtime(eia_artifacts):
    manifest = json.loads((eia_artifacts / "image-classifier" / "manifest.json").read_text())
    assert manifest["recipe"] == "eia-1.5"  # the seed's recipe for the 1.5.1 runtime: script
    # Converted by the EIA runtime's own torch (its venv), so the runtime can load it; no override needed.
    assert manifest["runtime_framework_version"] == "1.5.1" and manifest["allow_newer_torch"] is False
    assert manifest["build_framework_version"] == manifest["parity"]["checked_with"] == "1.5.1"
    assert manifest["target_runtime"] == {"framework": "pytorch", "framework_version": "1.5.1", "profile": "eia"}
    assert manifest["input_shape"] == [1, 3, 64, 64]
    assert manifest["torchscript_archive_format_version"] >= 1
    assert manifest["parity"]["max_abs_error"] <= manifest["parity"]["atol"]
    assert len(manifest["sha256"]) == 64


class DataDependent(torch.nn.Module):
    """Tracing freezes the branch taken for the example input (zeros), so other inputs diverge."""

    def forward(self, x):
        if bool(x.sum() > 0):
            return x * 2
        return -x


def test_parity_check_catches_a_trace_that_froze_a_branch():
    model = DataDependent().eval()
    traced = convert(model, "trace", torch.zeros(1, 3, 4, 4))
    with pytest.raises(ParityError, match=r"parity check failed at batch \d: output\[.*try recipe: script"):
        check_parity(model, traced, (1, 3, 4, 4))
    assert check_parity(model, convert(model, "script", torch.zeros(1, 3, 4, 4)), (1, 3, 4, 4)) == 0.0


@pytest.mark.parametrize("profile", ["eia", "gpu", "cpu"])  # the eia-1.5 (script), trace and optimized recipes
def test_builds_from_two_checkouts_in_separate_processes_are_byte_identical(tmp_path, profile):
    """Same inputs, another directory and process: the same sha256 (so the same CDK asset hash)."""
    config = make_config(tmp_path / "config", lambda m: m["serving"].update(profile=profile))
    second_checkout = tmp_path / "elsewhere" / "checkout"
    for package in ("config", "model_artifacts", "inference_src", "runtimes"):
        shutil.copytree(REPO / package, second_checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    digests = []
    for run, checkout in (("first", REPO), ("second", second_checkout)):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "CI")}
        env["SERVING_RUNTIMES_DIR"] = str(REPO / ".venv-runtimes")  # the second checkout shares the runtime venvs
        result = subprocess.run(
            [sys.executable, "-m", "model_artifacts", "build", "--config", str(config), "--out", str(tmp_path / run)],
            cwd=checkout, env=env, capture_output=True, text=True, check=True,
        )
        assert "check parity" in result.stderr  # progress lines
        digests.append(json.loads((tmp_path / run / "image-classifier" / "manifest.json").read_text())["sha256"])
    assert digests[0] == digests[1]


def test_synthesis_refuses_a_missing_or_stale_artifact(tmp_path, eia_artifacts):
    deployment = load_config(make_config(tmp_path / "c")).environment("dev").models[0]
    with pytest.raises(ConfigError, match="no built artifact.*make artifacts"):
        load_built_artifact(tmp_path / "nowhere", deployment)
    assert load_built_artifact(eia_artifacts, deployment).sha256

    retargeted = load_config(
        make_config(tmp_path / "c13", lambda m: m["serving"]["profiles"]["eia"].update(framework_version="1.3.1"))
    ).environment("dev").models[0]
    with pytest.raises(ConfigError, match="stale.*recipe: built 'eia-1.5', configured 'eia-1.3'"):
        load_built_artifact(eia_artifacts, retargeted)

    resized = load_config(
        make_config(tmp_path / "c-resize", lambda m: m["build"].update(image_preprocessing={"resize_short_side": 80}))
    ).environment("dev").models[0]
    with pytest.raises(ConfigError, match="stale.*image_preprocessing"):
        load_built_artifact(eia_artifacts, resized)


def test_synthesis_refuses_an_artifact_whose_shared_handler_module_changed(tmp_path, eia_artifacts, monkeypatch):
    deployment = load_config(make_config(tmp_path / "c")).environment("dev").models[0]
    changed = tmp_path / "request_handling.py"
    changed.write_text((REPO / "inference_src" / "request_handling.py").read_text() + "# changed\n")
    monkeypatch.setattr("model_artifacts.manifest.SHARED_HANDLER_FILE", changed)
    with pytest.raises(ConfigError, match=r"stale \(code/request_handling.py \(request_handling.py\) changed since the build\)"):
        load_built_artifact(eia_artifacts, deployment)


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    config = make_config(tmp_path / "config", lambda m: m["serving"].update(profile="tpu"))
    result = subprocess.run(
        [sys.executable, "-m", "model_artifacts", "build", "--config", str(config), "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "serving.profile = 'tpu'" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------ conversion by the serving runtime's own torch


def test_runtime_export_stays_valid_python_3_6():
    """It runs inside the EIA images (Python 3.6, torch 1.5.1), with the example models it imports."""
    from tests.test_handler import _vermin

    for module in ("runtime_export.py", "example_models.py", "__init__.py"):
        result = _vermin(REPO / "model_artifacts" / module)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", ["eia", "cpu"])
def test_the_pipeline_s_runtime_export_packages_to_the_same_bytes_as_make_artifacts(tmp_path, profile):
    """The pipeline runs its RuntimeExport command in the runtime's image; here the same command runs in the
    runtime's venv (`python` = that venv's), and `--runtime-export` packages it: the same model.tar.gz."""
    from model_artifacts.build import build_artifact
    from model_artifacts.requests import build_requests, runtime_of
    from stacks.pipeline_steps import RUNTIME_EXPORT_DIR, runtime_export_command

    config = load_config(make_config(tmp_path / "config", lambda m: m["serving"].update(profile=profile)))
    deployment = config.environments[0].models[0]
    (local,) = build_requests(config)
    python = runtime_of(local).require()
    workspace = tmp_path / "codebuild"  # the step's working directory: the source checkout
    workspace.mkdir()
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", "-c", runtime_export_command(deployment)], cwd=workspace, env=env, check=True, capture_output=True)

    (from_pipeline,) = build_requests(config, runtime_export_dir=workspace / RUNTIME_EXPORT_DIR)
    assert build_artifact(from_pipeline, tmp_path / "pipeline")["sha256"] == build_artifact(local, tmp_path / "local")["sha256"]


def test_a_stale_runtime_export_is_refused_with_the_fix(tmp_path, eia_artifacts):
    from model_artifacts.build import build_artifact
    from model_artifacts.requests import build_requests

    export_dir = tmp_path / "export" / "image-classifier"
    export_dir.mkdir(parents=True)
    (export_dir / "model.pt").write_bytes(b"")
    (export_dir / "export.json").write_text(json.dumps({"model": "example-resnet-tiny", "recipe": "trace", "input_shape": [1, 3, 64, 64]}))
    (request,) = build_requests(load_config(make_config(tmp_path / "c")), runtime_export_dir=tmp_path / "export")
    with pytest.raises(ConfigError, match="stale .*recipe: exported 'trace', configured 'eia-1.5'.*export again"):
        build_artifact(request, tmp_path / "out")
    (request,) = build_requests(load_config(make_config(tmp_path / "c2")), runtime_export_dir=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no runtime export .*model_artifacts.runtime_export"):
        build_artifact(request, tmp_path / "out")


@pytest.mark.slow
def test_an_aoti_artifact_is_byte_reproducible_and_portable(serving_case, tmp_path):
    """Recipe aoti, built twice in different directories, writes the same model.tar.gz: the package's zip entries
    are undated, and Inductor's build directory and torch's directory are fixed paths, so neither the checkout nor
    its venvs appear in the package. Its shared library was compiled for x86-64-v3 (AVX2), not for the build host:
    no AVX-512 register appears, whatever CPU built it."""
    from model_artifacts.runtime_export import AOTI_BUILD_DIR

    first = serving_case("cpu-aoti")
    config = shutil.copytree(first.config_dir, tmp_path / "elsewhere" / "config")  # the case's config, in another directory
    built = build_for(config, tmp_path / "elsewhere" / "artifacts")["image-classifier"]
    assert built["sha256"] == first.manifest["sha256"] and built["recipe"] == "aoti"
    with tarfile.open(first.artifact_dir / "model.tar.gz") as tar:
        assert [m.name for m in tar.getmembers()] == [
            "code/inference.py", "code/request_handling.py", "code/requirements.txt", "model.pt2", "model_info.json"]
        assert json.loads(tar.extractfile("model_info.json").read())["recipe"] == "aoti"
    package = zipfile.ZipFile(first.model_dir / "model.pt2")
    assert {entry.date_time for entry in package.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    sources = "".join(package.read(name).decode() for name in package.namelist() if name.endswith(".cpp"))
    assert str(REPO) not in sources and str(first.runtime.venv) not in sources
    assert "/tmp/" not in sources.replace(AOTI_BUILD_DIR, "")  # AOTI_SITE_PACKAGES starts with it; no other directory leaks in
    # Frozen (Inductor freezes only with autograd off): every convolution became a oneDNN call with its batch norm
    # folded in and its ReLU (or residual add + ReLU) fused, none is left as a plain aten convolution.
    assert "aoti_torch_cpu_mkldnn__convolution_pointwise_binary_" in sources
    assert "aoti_torch_cpu_mkldnn__convolution_pointwise(" in sources and "aoti_torch_cpu_convolution(" not in sources
    library = tmp_path / "model.so"
    library.write_bytes(next(package.read(name) for name in package.namelist() if name.endswith(".so")))
    disassembly = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "ymm" in disassembly and "zmm" not in disassembly  # AVX2 vectorized, no AVX-512


def _aoti_export(tmp_path, source_args, path=None):
    """runtime_export --recipe aoti in the pytorch-2.6.0 runtime's own Python; the models of tmp_path importable."""
    from runtimes import RUNTIMES

    python = RUNTIMES["pytorch-2.6.0"].require()
    env = {"PATH": path or os.environ["PATH"], "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)]), "PYTHONHASHSEED": "0",
           "HOME": str(tmp_path)}
    return subprocess.run([str(python), "-m", "model_artifacts.runtime_export", *source_args, "--recipe", "aoti",
                           "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True)


def test_recipe_aoti_without_a_cpp_compiler_says_what_to_install(tmp_path):
    """AOTInductor compiles C++: without g++ the export stops before compiling, naming the fix, not with a traceback."""
    from runtimes import RUNTIMES

    done = _aoti_export(tmp_path, ["--model", "example-resnet-tiny", "--input-shape", "1", "3", "64", "64"],
                        path=str(RUNTIMES["pytorch-2.6.0"].python.parent))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "recipe aoti compiles the model to C++ with g++, which is not on PATH: install a C++ compiler" in done.stderr
    assert not (tmp_path / "out" / "model.pt2").exists()


BRANCHY_MODEL = """
import torch


class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # a branch on the data: one traced graph cannot hold both sides
            return y.relu()
        return -y


def build():
    return Branchy()
"""


def test_recipe_aoti_on_a_model_torch_export_cannot_capture_points_to_torchscript(tmp_path):
    (tmp_path / "branchy.py").write_text(BRANCHY_MODEL)
    done = _aoti_export(tmp_path, ["--factory", "branchy:build", "--input-shape", "1", "3", "16", "16"])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(r"recipe aoti: torch.export could not capture the model as one graph with a dynamic batch \(Dynamic control "
                     r"flow is not supported.*\); use recipe optimized \(TorchScript\), or script for data-dependent control flow",
                     done.stderr), done.stderr
