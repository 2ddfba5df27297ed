"""The handler, in-process through the real SageMaker toolkit and a TorchServe Context, on the built artifact."""
import importlib
import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from local_serving.client import base64_image_request, example_image, npy
from tests.conftest import REPO
from tests.payloads import BATCH, INPUT_SHAPE, bad_requests


@pytest.fixture(scope="module")
def model_dir(eia_artifacts, tmp_path_factory):
    """model.tar.gz extracted as SageMaker does into /opt/ml/model."""
    directory = tmp_path_factory.mktemp("opt-ml-model")
    with tarfile.open(eia_artifacts / "image-classifier" / "model.tar.gz") as tar:
        tar.extractall(directory, filter="data")
    return directory


@pytest.fixture(scope="module")
def container_env(eia_config):
    from config import load_config
    from config.container import container_environment

    return container_environment(load_config(eia_config).models["image-classifier"])


@pytest.fixture(scope="module")
def service(model_dir, container_env):
    """The toolkit's HandlerService with one TorchServe Context reused for every request, as TorchServe does."""
    from sagemaker_pytorch_serving_container.handler_service import HandlerService
    from ts.context import Context

    monkeypatch = pytest.MonkeyPatch()
    for name, value in container_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(model_dir / "code"))
    sys.modules.pop("inference", None)  # the packaged copy, not inference_src/
    handler = HandlerService()
    context = Context("model", str(model_dir), {"model": {}}, 1, None, "0.12.0")
    _set_headers(context, "application/json")
    handler.initialize(context)
    yield handler, context
    sys.modules.pop("inference", None)
    monkeypatch.undo()


def _set_headers(context, content_type, accept=None):
    from ts.context import RequestProcessor

    headers = {"Content-Type": content_type} if content_type else {}
    if accept:
        headers["Accept"] = accept
    context.request_processor = [RequestProcessor(headers)]


def _invoke(service, body, content_type, accept=None):
    handler, context = service
    _set_headers(context, content_type, accept)
    response = handler.handle([{"body": body}], context)
    return response[0], context.get_response_status(0)[0]


def _logits(service, body, content_type):
    answer, status = _invoke(service, body, content_type, "application/x-npy")
    assert status == 200, answer
    return np.load(io.BytesIO(answer))


def _expected_logits(model_dir, batch):
    module = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu")
    with torch.no_grad():
        return module(torch.from_numpy(batch)).numpy()


def _png(pixels):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def test_npy_in_npy_out_equals_a_direct_forward(service, model_dir):
    logits = _logits(service, npy(BATCH), "application/x-npy")
    np.testing.assert_allclose(logits, _expected_logits(model_dir, BATCH), rtol=1e-5, atol=1e-5)


def test_one_chw_image_is_a_batch_of_one(service, model_dir):
    logits = _logits(service, npy(BATCH[0]), "application/x-npy")
    np.testing.assert_allclose(logits, _expected_logits(model_dir, BATCH[:1]), rtol=1e-5, atol=1e-5)


def test_json_instances_give_top_k_classes_and_scores(service, model_dir):
    payload = json.dumps({"instances": BATCH[:1].tolist()})
    body, status = _invoke(service, payload.encode(), "application/json")
    answer = json.loads(body)
    assert status == 200 and answer["shape"] == [1, 10]
    expected = torch.softmax(torch.from_numpy(_expected_logits(model_dir, BATCH[:1])), dim=1)[0]
    top = answer["predictions"][0]
    assert [p["class"] for p in top] == expected.topk(5).indices.tolist()
    assert top[0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_an_image_at_the_model_size_is_scaled_and_normalized_with_imagenet_statistics(service, model_dir):
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected_input = ((pixels / np.float32(255) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[np.newaxis]
    logits = _logits(service, base64_image_request([_png(pixels)], short=64), "application/json")
    np.testing.assert_allclose(logits, _expected_logits(model_dir, expected_input.astype(np.float32)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_raw_image_bodies_and_the_base64_json_contract_agree(service, image_format):
    image = example_image(image_format)
    raw = _logits(service, image, f"image/{image_format.lower()}")
    via_json = _logits(service, base64_image_request([image]), "application/json")
    assert raw.shape == (1, 10)
    np.testing.assert_array_equal(raw, via_json)


def test_a_base64_batch_answers_one_row_per_image(service):
    jpeg, png = example_image("JPEG"), example_image("PNG", size=(100, 180))
    batch = _logits(service, base64_image_request([jpeg, png], short=80), "application/json")
    singles = [_logits(service, base64_image_request([image], short=80), "application/json")[0] for image in (jpeg, png)]
    np.testing.assert_allclose(batch, np.stack(singles), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2])
def test_images_are_resized_on_the_short_side_then_center_cropped(handler_module, scale):
    """146x73 (short side 73, the default for a 64 crop): the crop keeps columns 41..104, half red, half blue."""
    from PIL import Image

    pixels = np.zeros((73 * scale, 146 * scale, 3), np.uint8)
    pixels[:, : 73 * scale, 0] = 255  # left half red
    pixels[:, 73 * scale :, 2] = 255  # right half blue
    chw = handler_module.preprocess_image(Image.fromarray(pixels), INPUT_SHAPE, handler_module.DEFAULT_IMAGE_PREPROCESSING)
    red, _, blue = chw * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    assert chw.shape == (3, 64, 64)
    assert red[:, :31].min() > 0.99 and red[:, 33:].max() < 0.01
    assert blue[:, :31].max() < 0.01 and blue[:, 33:].min() > 0.99


def test_accept_lists_pick_the_first_supported_type(service):
    body, status = _invoke(service, npy(BATCH[:1]), "application/x-npy", "text/html, application/x-npy;q=0.9")
    assert status == 200 and np.load(io.BytesIO(body)).shape == (1, 10)


@pytest.mark.parametrize("bad", bad_requests(6 * 1024 * 1024), ids=lambda bad: bad.name)
def test_bad_requests_get_a_4xx_and_a_one_line_message_without_traceback(service, bad):
    body, status = _invoke(service, bad.body, bad.content_type, bad.accept)
    text = body.decode() if isinstance(body, bytes) else body
    assert status == bad.status, text
    assert json.loads(text) == {"status": bad.status, "error": json.loads(text)["error"]}
    assert bad.message in json.loads(text)["error"]
    assert "\n" not in text and "Traceback" not in text


def test_a_missing_content_type_is_a_415(service):
    body, status = _invoke(service, npy(BATCH[:1]), None)
    assert status == 415 and "missing Content-Type" in body


def test_the_size_limit_comes_from_the_container_environment(container_env):
    assert int(container_env["INFERENCE_MAX_REQUEST_BYTES"]) == 6 * 1024 * 1024
    assert int(container_env["TS_MAX_REQUEST_SIZE"]) > int(container_env["INFERENCE_MAX_REQUEST_BYTES"])


def test_toolkits_that_pass_no_context_still_get_the_status_code(handler_module):
    """Older toolkits call input_fn(body, content_type): the toolkit's error class carries the status."""
    from sagemaker_inference.errors import GenericInferenceToolkitError

    with pytest.raises(GenericInferenceToolkitError) as raised:
        handler_module.input_fn(b"hello", "text/plain")
    assert raised.value.status_code == 415 and "unsupported content type" in raised.value.message


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



def test_an_optimized_artifact_is_tuned_for_the_serving_cpu_when_loaded(handler_module, tmp_path):
    """The build froze it; model_fn applies optimize_for_inference (MKLDNN), which cannot be saved."""
    from model_artifacts.runtime_export import served_form
    from tests.conftest import build_for, make_config

    config = make_config(tmp_path / "config", lambda m: m["serving"].update(profile="cpu"))
    build_for(config, tmp_path / "artifacts")
    directory = tmp_path / "model"
    with tarfile.open(tmp_path / "artifacts" / "image-classifier" / "model.tar.gz") as tar:
        tar.extractall(directory, filter="data")
    model = handler_module.model_fn(str(directory))
    assert model.info["recipe"] == "optimized" and "mkldnn" in str(model.module.graph)
    batch = torch.from_numpy(BATCH)
    expected = served_form(torch.jit.load(str(directory / "model.pt")), "optimized")(batch)
    np.testing.assert_allclose(handler_module.predict_fn(batch, model).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
