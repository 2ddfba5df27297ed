"""End to end: the packaged model.tar.gz served by the real SageMaker PyTorch serving stack
(sagemaker-pytorch-inference + TorchServe on Java 17) on localhost, called over HTTP."""
import io
import json

import numpy as np
import psutil
import pytest

from local_serving.client import base64_image_request, example_image, invoke, npy
from tests.payloads import BATCH, bad_requests

pytestmark = pytest.mark.slow

BURST_ROUNDS = 2


@pytest.fixture(scope="module")
def endpoint(eia_config, eia_artifacts, tmp_path_factory):
    from config import load_config
    from config.container import container_environment
    from local_serving.server import LocalEndpoint

    spec = load_config(eia_config).models["image-classifier"]
    artifact_dir = eia_artifacts / "image-classifier"
    input_shape = json.loads((artifact_dir / "manifest.json").read_text())["input_shape"]
    server = LocalEndpoint(artifact_dir / "model.tar.gz", input_shape, tmp_path_factory.mktemp("opt-ml"), container_environment(spec))
    with server:
        yield server
        pids = server.pids()
    # Stopped through its process id: the toolkit, TorchServe's Java frontend and the worker are gone.
    assert pids and not _alive(pids)


def _alive(pids):
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_the_real_stack_serves_the_archive_toolkit_torchserve_and_one_worker(endpoint):
    commands = [" ".join(psutil.Process(pid).cmdline()) for pid in endpoint.pids()]
    assert any("local_serving.container" in command for command in commands)
    assert any("org.pytorch.serve.ModelServer" in command for command in commands)
    assert sum("model_service_worker" in command for command in commands) == 1
    assert (endpoint.work_dir / "model" / "code" / "inference.py").is_file()


def _logits(endpoint, body, content_type):
    answer = invoke(endpoint.url, body, content_type, "application/x-npy")
    assert answer.status == 200, answer.body
    assert answer.content_type.startswith("application/x-npy")
    return np.load(io.BytesIO(answer.body))


def test_npy_batch_over_http_equals_the_in_process_forward(endpoint):
    import torch

    module = torch.jit.load(str(endpoint.work_dir / "model" / "model.pt"), map_location="cpu")
    with torch.no_grad():
        expected = module(torch.from_numpy(BATCH)).numpy()
    np.testing.assert_allclose(_logits(endpoint, npy(BATCH), "application/x-npy"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_raw_images_and_the_base64_contract_give_the_same_answer(endpoint, image_format):
    image = example_image(image_format)
    raw = _logits(endpoint, image, f"image/{image_format.lower()}")
    np.testing.assert_array_equal(raw, _logits(endpoint, base64_image_request([image]), "application/json"))


def test_json_answers_are_top_k_with_the_batch_shape(endpoint):
    answer = invoke(endpoint.url, base64_image_request([example_image("JPEG")] * 2, short=96), "application/json")
    assert answer.status == 200 and answer.content_type.startswith("application/json")
    document = answer.json()
    assert document["shape"] == [2, 10]
    assert [len(row) for row in document["predictions"]] == [5, 5]
    assert document["predictions"][0] == document["predictions"][1]


def test_json_instances_over_http(endpoint):
    answer = invoke(endpoint.url, json.dumps({"instances": BATCH.tolist()}).encode(), "application/json")
    assert answer.status == 200 and answer.json()["shape"] == [2, 10]


@pytest.mark.parametrize("bad", bad_requests(6 * 1024 * 1024), ids=lambda bad: bad.name)
def test_bad_requests_get_their_status_and_a_one_line_message(endpoint, bad):
    answer = invoke(endpoint.url, bad.body, bad.content_type, bad.accept)
    assert answer.status == bad.status, answer.body
    text = answer.body.decode()
    assert bad.message in json.loads(text)["error"]
    assert "\n" not in text.strip() and "Traceback" not in text


def test_the_worker_keeps_serving_after_a_burst_of_bad_requests(endpoint):
    good = example_image("JPEG")
    before = _logits(endpoint, good, "image/jpeg")
    processes = sorted(endpoint.pids())
    statuses = [
        invoke(endpoint.url, bad.body, bad.content_type, bad.accept).status
        for _ in range(BURST_ROUNDS)
        for bad in bad_requests(6 * 1024 * 1024)
    ]
    assert all(400 <= status < 500 for status in statuses), statuses
    np.testing.assert_array_equal(_logits(endpoint, good, "image/jpeg"), before)
    assert sorted(endpoint.pids()) == processes  # no worker died and was replaced
