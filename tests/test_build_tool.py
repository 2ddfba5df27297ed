"""The build step as a team uses it: their own model + weights from the CLI, every recipe, the runtime
guard, the content-addressed cache and the progress output."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch

from config import ConfigError
from model_artifacts.build import build_artifact
from model_artifacts.manifest import HANDLER_FILES
from model_artifacts.requests import BuildRequest
from tests.conftest import REPO

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class SmallNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn(self.conv(x)))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def build():
        return SmallNet()
''')


@pytest.fixture
def user_model(tmp_path):
    """A team's own package and trained weights, in their working directory."""
    (tmp_path / "team_models").mkdir()
    (tmp_path / "team_models" / "__init__.py").write_text("")
    (tmp_path / "team_models" / "small.py").write_text(FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        from team_models.small import build

        torch.manual_seed(7)
        model = build()
        # The legacy format: torch 1.3.1 (an EIA runtime) reads no other.
        torch.save(model.state_dict(), tmp_path / "small.pth", _use_new_zipfile_serialization=False)
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("team_models")]:
            del sys.modules[name]


def _convert(cwd, *args, env=None):
    command = [sys.executable, "-m", "model_artifacts", "convert", "--factory", "team_models.small:build",
               "--weights", "small.pth", "--input-shape", "1", "3", "16", "16", *args]
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment)


@pytest.mark.parametrize("recipe, runtime_torch", [
    ("trace", "2.6.0"), ("script", "2.6.0"), ("optimized", "2.6.0"), ("eia-1.5", "1.5.1"), ("eia-1.3", "1.3.1"),
])
def test_a_user_model_with_weights_is_built_by_its_runtime_s_own_torch(user_model, recipe, runtime_torch):
    result = _convert(user_model, "--recipe", recipe, "--runtime-torch", runtime_torch, "--out", "out")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((user_model / "out" / "manifest.json").read_text())
    assert manifest["model"] == "team_models.small:build" and manifest["recipe"] == recipe
    assert manifest["weights_sha256"] and manifest["parity"]["max_abs_error"] <= manifest["parity"]["atol"]
    assert manifest["build_framework_version"] == manifest["parity"]["checked_with"] == runtime_torch
    assert (manifest["runtime_framework_version"], manifest["allow_newer_torch"]) == (runtime_torch, False)
    assert not (user_model / "out" / "model.pt").exists()  # the working archive is streamed, then removed


def _exported_elsewhere(runtime_name, recipe, out):
    """A runtime export made by another torch than the target's (a model built outside its runtime)."""
    from runtimes import RUNTIMES

    command = [str(RUNTIMES[runtime_name].require()), "-m", "model_artifacts.runtime_export", "--model", "example-resnet-tiny",
               "--recipe", recipe, "--input-shape", "1", "3", "64", "64", "--out", str(out / "image-classifier")]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)})
    return out


def _eia_request(tmp_path, framework_version, export_dir, **changes):
    from config import load_config
    from model_artifacts.requests import build_requests
    from tests.conftest import make_config

    config = tmp_path / f"config-{framework_version}"
    if not config.exists():
        make_config(config, lambda m: m["serving"]["profiles"]["eia"].update(framework_version=framework_version))
    (request,) = build_requests(load_config(config), runtime_export_dir=export_dir)
    return replace(request, **changes)


def test_the_format_guard_refuses_an_archive_the_runtime_cannot_read_even_with_the_override(tmp_path):
    """torch 2.6 writes a TorchScript format torch 1.3.1 cannot read: refused with the fix."""
    export_dir = _exported_elsewhere("pytorch-2.6.0", "eia-1.3", tmp_path / "export")
    request = _eia_request(tmp_path, "1.3.1", export_dir, allow_newer_torch=True)
    with pytest.raises(ConfigError, match="reads at most format 2") as refused:
        build_artifact(request, tmp_path / "out")
    assert "runtime_export" in str(refused.value) and "torch==1.3.1" in str(refused.value)
    assert not (tmp_path / "out" / "model.tar.gz").exists()


def test_a_newer_build_torch_is_refused_unless_allowed(tmp_path):
    export_dir = _exported_elsewhere("pytorch-2.6.0", "eia-1.5", tmp_path / "export")
    with pytest.raises(ConfigError, match="built with torch 2.6.0, newer than the runtime's torch 1.5.1.*allow_newer_torch"):
        build_artifact(_eia_request(tmp_path, "1.5.1", export_dir), tmp_path / "refused")
    manifest = build_artifact(_eia_request(tmp_path, "1.5.1", export_dir, allow_newer_torch=True), tmp_path / "allowed")
    assert (manifest["build_framework_version"], manifest["allow_newer_torch"]) == ("2.6.0", True)  # recorded: synthesis warns


@pytest.mark.parametrize("recipe, runtime_torch", [("trace", "2.6.0"), ("eia-1.5", "1.5.1"), ("eia-1.3", "1.3.1")])
def test_weights_are_loaded_safely_and_a_pickle_with_code_is_refused(user_model, recipe, runtime_torch):
    """torch 2.6 refuses it with weights_only=True; the EIA runtimes' torch has no such loader, so ours does."""
    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (user_model / "small.pth").write_bytes(pickle.dumps({"conv.weight": Exploit()}))
    result = _convert(user_model, "--recipe", recipe, "--runtime-torch", runtime_torch, "--out", "out")
    assert result.returncode == 2 and not (user_model / "pwned").exists()
    assert "not a state_dict that torch.load(weights_only=True) accepts" in result.stderr


def test_weights_in_a_format_the_runtime_cannot_read_say_how_to_save_them(user_model):
    from team_models.small import build

    torch.save(build().state_dict(), user_model / "small.pth")  # torch's zip format, which torch 1.3.1 predates
    result = _convert(user_model, "--recipe", "eia-1.3", "--runtime-torch", "1.3.1", "--out", "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "_use_new_zipfile_serialization=False" in result.stderr


def test_weights_that_do_not_fit_name_the_keys(user_model):
    torch.save({"conv.weight": torch.zeros(1)}, user_model / "small.pth")
    result = _convert(user_model, "--recipe", "trace", "--out", "out")
    assert result.returncode == 2 and "do not fit the model" in result.stderr and "Missing key(s)" in result.stderr


def test_a_factory_that_does_not_import_says_where_to_run_from(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "model_artifacts", "convert", "--factory", "nowhere.net:build", "--input-shape", "1", "3", "8", "8",
         "--recipe", "trace", "--out", "out"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2 and "cannot import 'nowhere.net'" in result.stderr and "PYTHONPATH" in result.stderr


# ------------------------------------------------------------ the content-addressed cache


@pytest.fixture
def request_for(user_model):
    return BuildRequest(
        name="small", source="team_models.small:build", example=None, factory="team_models.small:build",
        weights=user_model / "small.pth", input_shape=(1, 3, 16, 16), input_dtype="float32", recipe="trace",
        target_framework="pytorch", target_framework_version="2.6.0", target_profile="cpu",
        image_preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3, "resize_short_side": None},
    )


def _built(request, out):
    before = (out / "model.tar.gz").stat().st_mtime_ns if (out / "model.tar.gz").exists() else None
    manifest = build_artifact(request, out)
    return manifest, (out / "model.tar.gz").stat().st_mtime_ns != before


def test_an_unchanged_rebuild_is_a_no_op_and_every_input_change_rebuilds(request_for, user_model, tmp_path, monkeypatch):
    out = tmp_path / "artifact"
    first, rebuilt = _built(request_for, out)
    assert rebuilt
    assert _built(request_for, out) == (first, False)  # nothing changed: no rebuild

    assert _built(replace(request_for, recipe="script"), out)[1]  # recipe
    assert _built(request_for, out)[1]

    torch.manual_seed(8)
    from team_models.small import build

    torch.save(build().state_dict(), user_model / "small.pth")
    assert _built(request_for, out)[1]  # weights

    source = user_model / "team_models" / "small.py"
    source.write_text(source.read_text() + "\n# retrained head\n")
    assert _built(request_for, out)[1]  # the model's code

    pins = tmp_path / "pins"
    pins.mkdir()
    (pins / "pytorch-2.6.0.txt").write_text((REPO / "runtimes" / "pytorch-2.6.0.txt").read_text() + "# a new pin\n")
    monkeypatch.setattr("runtimes.REQUIREMENTS_DIR", pins)
    assert _built(request_for, out)[1]  # the runtime that builds it


@pytest.mark.parametrize("changed", ["inference.py", "request_handling.py"])
def test_a_changed_handler_rebuilds(request_for, tmp_path, monkeypatch, changed):
    out = tmp_path / "artifact"
    _built(request_for, out)
    copy = tmp_path / "inference_src"
    shutil.copytree(REPO / "inference_src", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / changed).write_text((copy / changed).read_text() + "\n# changed\n")
    monkeypatch.setitem(HANDLER_FILES, "pytorch", copy / "inference.py")
    monkeypatch.setattr("model_artifacts.manifest.SHARED_HANDLER_FILE", copy / "request_handling.py")
    assert _built(request_for, out)[1]


def test_a_tampered_artifact_is_rebuilt(request_for, tmp_path):
    out = tmp_path / "artifact"
    manifest, _ = _built(request_for, out)
    (out / "model.tar.gz").write_bytes(b"not the artifact")
    rebuilt_manifest, rebuilt = _built(request_for, out)
    assert rebuilt and rebuilt_manifest["sha256"] == manifest["sha256"]


# ------------------------------------------------------------ progress: steps in logs, one line per model in CI


@pytest.mark.parametrize("ci, expected_lines", [(None, 9), ("true", 1)])
def test_progress_is_per_step_in_logs_and_one_line_in_ci(user_model, ci, expected_lines):
    result = _convert(user_model, "--recipe", "trace", "--out", "out", env={"CI": ci} if ci else None)
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == expected_lines, result.stderr
    assert lines[-1].startswith("[model] built in")
