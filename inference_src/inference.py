"""SageMaker PyTorch serving handler: model_fn, input_fn, predict_fn, output_fn.

Ships inside model.tar.gz as code/inference.py and runs in the SageMaker PyTorch serving
containers, including the Elastic Inference ones (torch 1.3.1 and 1.5.1 on Python 3.6), so it must
stay valid Python 3.6 and import nothing but torch, numpy and the standard library.
"""
import io
import json
import logging
import os

import numpy as np
import torch

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
MODEL_INFO_FILE = "model_info.json"  # stored inside model.pt by the build step (_extra_files)
# The toolkit's convention: the EIA containers set this when an accelerator is attached.
ACCELERATOR_PRESENT_ENV = "SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"
TOP_K = 5

JSON = "application/json"
NPY = "application/x-npy"

try:  # The toolkit turns this into an HTTP status with our message instead of a 500 traceback.
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - older toolkits
    _ToolkitError = None


class RequestError(ValueError):
    """A request the client must fix; carries the HTTP status the endpoint answers with."""

    def __init__(self, status_code, message):
        super(RequestError, self).__init__(message)
        self.status_code = status_code
        self.message = message


def _reject(status_code, message):
    if _ToolkitError is not None:
        return _ToolkitError(status_code, message)
    return RequestError(status_code, message)


def accelerator_present():
    return os.environ.get(ACCELERATOR_PRESENT_ENV) == "true"


def torch_minor_version():
    parts = torch.__version__.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


class LoadedModel(object):
    """The TorchScript module plus what the build step recorded about its input."""

    def __init__(self, module, info, device):
        self.module = module
        self.info = info
        self.device = device

    @property
    def input_shape(self):
        return tuple(self.info.get("input_shape", ()))


def model_fn(model_dir):
    extra_files = {MODEL_INFO_FILE: ""}
    # EIA recipe: always load on CPU; the accelerator is reached through the JIT, not a device.
    module = torch.jit.load(os.path.join(model_dir, MODEL_FILE), map_location=torch.device("cpu"), _extra_files=extra_files)
    if torch_minor_version() == (1, 5):
        # The seed's 1.5.1 EIA recipe: the profiling executor does not run on the accelerator.
        torch._C._jit_set_profiling_executor(False)
    device = torch.device("cpu")
    if not accelerator_present() and torch.cuda.is_available():
        device = torch.device("cuda")
        module = module.to(device)
    module.eval()
    info = json.loads(extra_files[MODEL_INFO_FILE] or "{}")
    logger.info("loaded %s on %s (accelerator present: %s)", MODEL_FILE, device, accelerator_present())
    return LoadedModel(module, info, device)


def _media_type(content_type):
    return (content_type or "").split(";")[0].strip().lower()


def input_fn(request_body, content_type):
    media_type = _media_type(content_type)
    if request_body is None or len(request_body) == 0:
        raise _reject(400, "empty request body; send a float32 NCHW batch as application/x-npy or JSON")
    if media_type == NPY:
        array = _decode_npy(request_body)
    elif media_type == JSON:
        array = _decode_json(request_body)
    else:
        raise _reject(415, "unsupported content type {!r}; use {} or {}".format(content_type, NPY, JSON))
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise _reject(400, "expected an NCHW batch (rank 4) or one CHW image (rank 3), got shape {}".format(list(array.shape)))
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _decode_npy(body):
    try:
        array = np.load(io.BytesIO(bytes(body)), allow_pickle=False)
    except Exception as error:  # numpy raises several types for a corrupt file
        raise _reject(400, "body is not a valid .npy array: {}".format(error))
    if not np.issubdtype(array.dtype, np.number):
        raise _reject(400, "expected a numeric array, got dtype {}".format(array.dtype))
    return array


def _decode_json(body):
    try:
        document = json.loads(body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body)
    except (ValueError, UnicodeDecodeError) as error:
        raise _reject(400, "body is not valid JSON: {}".format(error))
    instances = document.get("instances") if isinstance(document, dict) else document
    if instances is None:
        raise _reject(400, 'JSON body must be {"instances": [...]} or a nested list of numbers')
    try:
        return np.asarray(instances, dtype=np.float32)
    except (TypeError, ValueError):
        raise _reject(400, "JSON instances must be a rectangular nested list of numbers")


def predict_fn(input_data, model):
    expected = model.input_shape
    if expected and tuple(input_data.shape[1:]) != tuple(expected[1:]):
        raise _reject(
            400, "expected images of shape {} (CHW), got {}".format(list(expected[1:]), list(input_data.shape[1:]))
        )
    with torch.no_grad():
        if accelerator_present() and torch_minor_version() == (1, 3):
            # The seed's 1.3.1 EIA recipe: run the traced graph on the attached accelerator.
            with torch.jit.optimized_execution(True, {"target_device": "eia:0"}):
                return model.module(input_data)
        return model.module(input_data.to(model.device)).cpu()


def output_fn(prediction, accept):
    media_type = _media_type(accept) or JSON
    if media_type in (JSON, "*/*"):
        return json.dumps(_top_k(prediction)), JSON
    if media_type == NPY:
        buffer = io.BytesIO()
        np.save(buffer, prediction.numpy(), allow_pickle=False)
        return buffer.getvalue(), NPY
    raise _reject(406, "unsupported Accept {!r}; use {} or {}".format(accept, JSON, NPY))


def _top_k(logits):
    probabilities = torch.softmax(logits.float(), dim=1)
    k = min(TOP_K, probabilities.shape[1])
    scores, classes = probabilities.topk(k, dim=1)
    return {
        "shape": list(logits.shape),
        "predictions": [
            [{"class": int(c), "score": round(float(s), 6)} for c, s in zip(row_classes, row_scores)]
            for row_classes, row_scores in zip(classes.tolist(), scores.tolist())
        ],
    }
