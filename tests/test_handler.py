"""The handler, in-process through the real SageMaker toolkit, on the built artifact."""
import importlib
import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from tests.conftest import REPO


@pytest.fixture(scope="module")
def model_dir(eia_artifacts, tmp_path_factory):
    """model.tar.gz extracted as SageMaker does into /opt/ml/model."""
    directory = tmp_path_factory.mktemp("opt-ml-model")
    with tarfile.open(eia_artifacts / "image-classifier" / "model.tar.gz") as tar:
        tar.extractall(directory, filter="data")
    return directory


@pytest.fixture(scope="module")
def service(model_dir):
    from sagemaker_pytorch_serving_container.handler_service import HandlerService

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "inference.py")
    monkeypatch.syspath_prepend(str(model_dir / "code"))
    sys.modules.pop("inference", None)  # the packaged copy, not inference_src/
    handler = HandlerService()
    handler.initialize(_context(model_dir, "application/json"))
    yield handler
    sys.modules.pop("inference", None)
    monkeypatch.undo()


def _context(model_dir, content_type, accept=None):
    from ts.context import Context, RequestProcessor

    context = Context("model", str(model_dir), {"model": {}}, 1, None, "0.12.0")
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    context.request_processor = [RequestProcessor(headers)]
    return context


def _invoke(service, model_dir, body, content_type, accept=None):
    context = _context(model_dir, content_type, accept)
    response = service.handle([{"body": body}], context)
    status = context.get_response_status(0)[0]
    return response[0], status, context


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _expected_logits(model_dir, batch):
    module = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu")
    with torch.no_grad():
        return module(torch.from_numpy(batch)).numpy()


BATCH = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)


def test_npy_in_npy_out_equals_a_direct_forward(service, model_dir):
    body, _, context = _invoke(service, model_dir, _npy(BATCH), "application/x-npy", "application/x-npy")
    logits = np.load(io.BytesIO(body))
    np.testing.assert_allclose(logits, _expected_logits(model_dir, BATCH), rtol=1e-5, atol=1e-5)


def test_json_instances_give_top_k_classes_and_scores(service, model_dir):
    payload = json.dumps({"instances": BATCH[:1].tolist()})
    body, _, _ = _invoke(service, model_dir, payload.encode(), "application/json")
    answer = json.loads(body)
    assert answer["shape"] == [1, 10]
    expected = torch.softmax(torch.from_numpy(_expected_logits(model_dir, BATCH[:1])), dim=1)[0]
    top = answer["predictions"][0]
    assert [p["class"] for p in top] == expected.topk(5).indices.tolist()
    assert top[0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_unsupported_content_type_is_a_415_that_names_the_fix(service, model_dir):
    body, status, _ = _invoke(service, model_dir, b"hello", "text/plain")
    assert status == 415
    assert "unsupported content type" in str(body) and "application/x-npy" in str(body)


def test_wrong_image_size_is_a_400(service, model_dir):
    body, status, _ = _invoke(service, model_dir, _npy(np.zeros((1, 3, 32, 32), np.float32)), "application/x-npy")
    assert status == 400 and "expected images of shape [3, 64, 64]" in str(body)


# ------------------------------------------------------------ the seed's EIA code paths, accelerator absent


@pytest.fixture
def handler_module(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "inference_src"))
    sys.modules.pop("inference", None)
    module = importlib.import_module("inference")
    yield module
    sys.modules.pop("inference", None)


def test_torch_1_5_disables_the_profiling_executor(handler_module, model_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(handler_module, "torch_minor_version", lambda: (1, 5))
    monkeypatch.setattr(torch._C, "_jit_set_profiling_executor", lambda flag: calls.append(flag) or True)
    handler_module.model_fn(str(model_dir))
    assert calls == [False]


def test_torch_1_3_with_an_accelerator_runs_under_eia_optimized_execution(handler_module, model_dir, monkeypatch):
    seen = []

    class RecordingContext:
        def __init__(self, should_optimize, options):
            seen.append((should_optimize, options))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    model = handler_module.model_fn(str(model_dir))
    monkeypatch.setenv("SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT", "true")
    monkeypatch.setattr(handler_module, "torch_minor_version", lambda: (1, 3))
    monkeypatch.setattr(torch.jit, "optimized_execution", RecordingContext)
    output = handler_module.predict_fn(torch.from_numpy(BATCH[:1]), model)
    assert seen == [(True, {"target_device": "eia:0"})]
    assert output.shape == (1, 10)


def test_without_an_accelerator_it_runs_on_cpu_without_eia_calls(handler_module, model_dir, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT", raising=False)
    monkeypatch.setattr(torch.jit, "optimized_execution", lambda *a: pytest.fail("EIA path taken without an accelerator"))
    model = handler_module.model_fn(str(model_dir))
    assert model.device.type == "cpu"
    assert handler_module.predict_fn(torch.from_numpy(BATCH[:1]), model).shape == (1, 10)


def _vermin(path):
    vermin = str(REPO / ".venv" / "bin" / "vermin") if (REPO / ".venv" / "bin" / "vermin").exists() else "vermin"
    return subprocess.run([vermin, "-t=3.6-", "--no-tips", "--violations", str(path)], capture_output=True, text=True)


def test_handler_is_valid_python_3_6(tmp_path):
    """The EIA images run Python 3.6; vermin fails on anything newer."""
    result = _vermin(REPO / "inference_src" / "inference.py")
    assert result.returncode == 0, result.stdout + result.stderr
    newer = tmp_path / "newer.py"
    newer.write_text("if (n := 3) > 2:\n    print(n)\n")  # 3.8 syntax: proves the check bites
    assert _vermin(newer).returncode != 0
