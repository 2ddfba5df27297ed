"""SageMaker PyTorch serving handler: model_fn, input_fn, predict_fn, output_fn.

Ships inside model.tar.gz as code/inference.py and runs in the SageMaker PyTorch serving
containers, including the Elastic Inference ones (torch 1.3.1 and 1.5.1 on Python 3.6 with
Pillow 7), so it must stay valid Python 3.6 and import nothing but torch, numpy, Pillow (only
for image requests; every PyTorch serving image has it) and the standard library.

Requests (Content-Type)            | Responses (Accept)
-----------------------------------|------------------------------------------------
application/x-npy  float NCHW/CHW  | application/json  {"shape", "predictions": top-k}
application/json   {"instances"}   | application/x-npy raw logits
application/json   {"image(s)": base64 JPEG/PNG, "short": N}  (MXNet SSD contract)
image/jpeg, image/png  one image   |

A request the client must fix is answered with a 4xx status and a one-line JSON body
{"status": ..., "error": ...}; the worker keeps serving.
"""
import base64
import binascii
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
MAX_REQUEST_BYTES_ENV = "INFERENCE_MAX_REQUEST_BYTES"
DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024  # SageMaker's real-time invocation payload limit
MAX_IMAGE_PIXELS = 40 * 1000 * 1000  # refuse decompression bombs before decoding them
MAX_SHORT_SIDE = 4096
TOP_K = 5

JSON = "application/json"
NPY = "application/x-npy"
JPEG = "image/jpeg"
PNG = "image/png"
IMAGE_TYPES = (JPEG, PNG)
ACCEPTED_CONTENT_TYPES = "{}, {} ({{\"instances\": ...}} or {{\"image\": <base64>}}), {} or {}".format(NPY, JSON, JPEG, PNG)
JSON_KEYS = ("instances", "image", "images", "short")

# Used when the build recorded no preprocessing: ImageNet statistics, resize 256 -> crop 224.
DEFAULT_IMAGE_PREPROCESSING = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize_short_side": None}

try:  # Older toolkits cannot pass us their context; then their error class still carries the status.
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - toolkits before the error classes existed
    _ToolkitError = None


class RequestError(Exception):
    """A request the client must fix, with the HTTP status it is answered with."""

    def __init__(self, status_code, message):
        super(RequestError, self).__init__(message)
        self.status_code = status_code
        self.message = message

    def body(self):
        return json.dumps({"status": self.status_code, "error": self.message})


class ImageBatch(object):
    """Decoded images, preprocessed in predict_fn where the model's input size is known."""

    def __init__(self, images, short_side):
        self.images = images
        self.short_side = short_side


def _rejected(error, context):
    """Answer `error` without a traceback when the toolkit gave us its context, else raise it.

    With the context (sagemaker-inference passes it to handler functions that take one) the status
    is set here and the RequestError travels on to output_fn, which writes it as the body. The
    toolkit's own error path would append a traceback to the body.
    """
    logger.info("rejected request (%s): %s", error.status_code, error.message)
    if context is None:
        if _ToolkitError is not None:
            # The old Transformer answers "<message>\n<traceback>" with our status: make the first line the
            # same one-line JSON body; the plain message becomes the HTTP reason phrase. "from None" keeps
            # the appended traceback to this raise, not the decoding errors behind it.
            raise _ToolkitError(error.status_code, error.body(), error.message) from None
        raise error
    context.set_response_status(error.status_code, error.message)
    return error


def accelerator_present():
    return os.environ.get(ACCELERATOR_PRESENT_ENV) == "true"


def torch_minor_version():
    parts = torch.__version__.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def max_request_bytes():
    return int(os.environ.get(MAX_REQUEST_BYTES_ENV) or DEFAULT_MAX_REQUEST_BYTES)


class LoadedModel(object):
    """The TorchScript module plus what the build step recorded about its input."""

    def __init__(self, module, info, device):
        self.module = module
        self.info = info
        self.device = device

    @property
    def input_shape(self):
        return tuple(self.info.get("input_shape", ()))

    @property
    def dtype(self):
        # The build records the example input's dtype (float32 unless the model was built for another).
        return getattr(torch, self.info.get("dtype") or "float32")

    @property
    def image_preprocessing(self):
        settings = dict(DEFAULT_IMAGE_PREPROCESSING)
        settings.update(self.info.get("image_preprocessing") or {})
        return settings


# ------------------------------------------------------------------------------------ model_fn


def _extra_files_map():
    """torch < 1.6 (both EIA runtimes) takes only its own ExtraFilesMap for _extra_files; newer torch a dict."""
    if torch_minor_version() < (1, 6):
        extra_files = torch._C.ExtraFilesMap()
        extra_files[MODEL_INFO_FILE] = ""
        return extra_files
    return {MODEL_INFO_FILE: ""}


def model_fn(model_dir):
    extra_files = _extra_files_map()
    eia = accelerator_present()
    if eia and torch_minor_version() == (1, 5):
        # EI 1.5.1 recipe: the profiling executor cannot run graphs on the accelerator; off before loading.
        torch._C._jit_set_profiling_executor(False)
    # Always load on the CPU: the EI client framework is CPU-only, the accelerator is reached through the JIT.
    module = torch.jit.load(os.path.join(model_dir, MODEL_FILE), map_location=torch.device("cpu"), _extra_files=extra_files)
    module.eval()
    device = torch.device("cpu")
    if eia and torch_minor_version() == (1, 5):
        import torcheia  # only in the EIA 1.5.1 image

        module = torcheia.jit.attach_eia(module, 0)
    elif not eia and torch.cuda.is_available():
        device = torch.device("cuda")
        module = module.to(device)
    info = json.loads(extra_files[MODEL_INFO_FILE] or "{}")
    if info.get("recipe") == "optimized" and device.type == "cpu" and hasattr(torch.jit, "optimize_for_inference"):
        # The build froze the model; MKLDNN layouts are chosen here, for this machine's CPU.
        module = torch.jit.optimize_for_inference(module)
    model = LoadedModel(module, info, device)
    if model.input_shape:
        # The JIT optimizes (and EI compiles) a graph on its first run: pay for it here, not on the first request.
        forward(model, torch.zeros(model.input_shape, dtype=model.dtype))
    logger.info("loaded %s on %s (accelerator present: %s)", MODEL_FILE, device, eia)
    return model


# ------------------------------------------------------------------------------------ input_fn


def input_fn(request_body, content_type, context=None):
    try:
        return decode_request(request_body, content_type)
    except RequestError as error:
        return _rejected(error, context)


def decode_request(body, content_type):
    """Bytes (str for JSON: the toolkit decodes UTF-8 types) -> float tensor batch or ImageBatch."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body is None or len(body) == 0:
        raise RequestError(400, "empty request body; send one of " + ACCEPTED_CONTENT_TYPES)
    limit = max_request_bytes()
    if len(body) > limit:
        raise RequestError(
            413, "request body is {} bytes, over the {}-byte limit ({}); send a smaller batch".format(len(body), limit, MAX_REQUEST_BYTES_ENV)
        )
    media_type = _media_types(content_type)[0] if content_type else ""
    if media_type == NPY:
        return _as_batch(_decode_npy(body))
    if media_type == JSON:
        return _decode_json(body)
    if media_type in IMAGE_TYPES:
        return ImageBatch([_decode_image(bytes(body), "body")], None)
    if not media_type:
        raise RequestError(415, "missing Content-Type; send one of " + ACCEPTED_CONTENT_TYPES)
    raise RequestError(415, "unsupported content type {!r}; send one of {}".format(content_type, ACCEPTED_CONTENT_TYPES))


def _media_types(header):
    """'application/json; q=0.9, */*' -> ['application/json', '*/*']."""
    return [part.split(";")[0].strip().lower() for part in (header or "").split(",") if part.strip()]


def _decode_npy(body):
    try:
        array = np.load(io.BytesIO(bytes(body)), allow_pickle=False)
    except Exception as error:  # numpy raises several types for a corrupt or pickled file
        raise RequestError(400, "body is not a valid .npy array ({}); write it with numpy.save".format(error))
    if array.dtype.kind not in "fiu":
        raise RequestError(400, "expected a float32 array, got dtype {}".format(array.dtype))
    return array


def _as_batch(array):
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise RequestError(
            400, "expected an NCHW batch (rank 4) or one CHW image (rank 3), got rank {} shape {}".format(array.ndim, list(array.shape))
        )
    if array.shape[0] == 0:
        raise RequestError(400, "the batch is empty; send at least one image")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _decode_json(body):
    try:
        document = json.loads(bytes(body).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, "body is not valid JSON: {}".format(error))
    except RecursionError:  # json's decoder recurses once per nesting level
        raise RequestError(400, "JSON body is nested too deeply; send {\"instances\": NCHW numbers} or {\"image\": <base64>}")
    if not isinstance(document, dict):
        raise RequestError(400, 'JSON body must be an object: {"instances": [...]} or {"image": "<base64 JPEG/PNG>"}')
    unknown = sorted(set(document) - set(JSON_KEYS))
    if unknown:
        raise RequestError(400, "unknown JSON key(s) {}; accepted keys: {}".format(unknown, list(JSON_KEYS)))
    if "instances" in document:
        return _as_batch(_numbers(document["instances"]))
    if "image" in document:
        encoded = [document["image"]]
    elif "images" in document:
        encoded = document["images"]
        if not isinstance(encoded, list) or not encoded:
            raise RequestError(400, '"images" must be a non-empty list of base64 JPEG/PNG strings')
    else:
        raise RequestError(400, 'JSON body needs "instances" (numbers) or "image"/"images" (base64 JPEG/PNG)')
    images = [_decode_image(_base64(value, index), "image {}".format(index)) for index, value in enumerate(encoded)]
    return ImageBatch(images, _short_side(document.get("short")))


def _numbers(instances):
    try:
        array = np.asarray(instances, dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(400, '"instances" must be a rectangular nested list of numbers')
    return array


def _base64(value, index):
    if not isinstance(value, str):
        raise RequestError(400, "image {} must be a base64 string, got {}".format(index, type(value).__name__))
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, "image {} is not valid base64 ({}); encode the file bytes with base64.b64encode".format(index, error))


def _short_side(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHORT_SIDE:
        raise RequestError(400, '"short" must be an integer between 1 and {}, got {!r}'.format(MAX_SHORT_SIDE, value))
    return value


def _decode_image(data, what):
    from PIL import Image  # only image requests need Pillow

    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # over twice Pillow's own limit: refused from the header alone
        raise RequestError(413, "{} is over the {} pixel limit (and Pillow's own); send a smaller image".format(what, MAX_IMAGE_PIXELS))
    except Exception:  # Pillow's UnidentifiedImageError
        raise RequestError(400, "{} is not a JPEG or PNG image".format(what))
    if image.format not in ("JPEG", "PNG"):
        raise RequestError(415, "{} is a {} image; send JPEG or PNG".format(what, image.format))
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise RequestError(413, "{} is {}x{} pixels, over the {} pixel limit".format(what, width, height, MAX_IMAGE_PIXELS))
    try:
        image.load()
    except Exception as error:  # truncated or corrupt data: OSError, ValueError, SyntaxError...
        raise RequestError(400, "{} is a damaged {} image ({})".format(what, image.format, error))
    return image


# ------------------------------------------------------------------------------------ predict_fn


def predict_fn(input_data, model, context=None):
    if isinstance(input_data, RequestError):
        return input_data  # already answered by input_fn; output_fn writes the body
    try:
        batch = _model_input(input_data, model)
    except RequestError as error:
        return _rejected(error, context)
    return forward(model, batch)


def forward(model, batch):
    """The model on one batch, on the accelerator when one is attached (predict_fn and model_fn's warm-up)."""
    batch = batch.to(model.device, model.dtype)
    with torch.no_grad():
        if not accelerator_present():
            return model.module(batch).cpu()
        if torch_minor_version() == (1, 3):
            # torch_eia 1.3.1 (only that build takes options): run the graph on accelerator 0.
            with torch.jit.optimized_execution(True, {"target_device": "eia:0"}):
                return model.module(batch)
        # torcheia (1.5.1): the attached module runs on the accelerator under the optimizing executor.
        with torch.jit.optimized_execution(True):
            return model.module(batch)


def _model_input(input_data, model):
    expected = model.input_shape
    if isinstance(input_data, ImageBatch):
        if not expected:
            raise RequestError(415, "this model recorded no input shape, so it cannot take images; send {}".format(NPY))
        settings = model.image_preprocessing
        images = [preprocess_image(image, expected, settings, input_data.short_side) for image in input_data.images]
        return torch.from_numpy(np.stack(images))
    if expected and tuple(input_data.shape[1:]) != tuple(expected[1:]):
        raise RequestError(400, "expected images of shape {} (CHW), got {}".format(list(expected[1:]), list(input_data.shape[1:])))
    return input_data


def preprocess_image(image, input_shape, settings, short_side=None):
    """PIL image -> float32 CHW: resize the short side, center-crop to the model's size, normalize."""
    from PIL import Image

    channels, height, width = input_shape[1:]
    if short_side is None:
        short_side = settings.get("resize_short_side") or int(round(max(height, width) * 256 / 224.0))
    if short_side < max(height, width):
        raise RequestError(400, '"short" ({}) must be at least the model input size {}x{}'.format(short_side, height, width))
    image = image.convert("RGB" if channels == 3 else "L")
    scale = float(short_side) / min(image.size)
    resized_width, resized_height = max(width, int(round(image.size[0] * scale))), max(height, int(round(image.size[1] * scale)))
    image = image.resize((resized_width, resized_height), Image.BILINEAR)
    left, top = int(round((resized_width - width) / 2.0)), int(round((resized_height - height) / 2.0))
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 255.0
    mean = np.asarray(settings["mean"], dtype=np.float32)[:channels]
    std = np.asarray(settings["std"], dtype=np.float32)[:channels]
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1), dtype=np.float32)


# ------------------------------------------------------------------------------------ output_fn


def output_fn(prediction, accept, context=None):
    if isinstance(prediction, RequestError):
        return prediction.body(), JSON
    try:
        return encode_prediction(prediction, accept)
    except RequestError as error:
        return _rejected(error, context).body(), JSON


def encode_prediction(prediction, accept):
    for media_type in _media_types(accept) or [JSON]:
        if media_type in (JSON, "*/*", "application/*"):
            return json.dumps(_top_k(prediction)), JSON
        if media_type == NPY:
            buffer = io.BytesIO()
            np.save(buffer, prediction.numpy(), allow_pickle=False)
            return buffer.getvalue(), NPY
    raise RequestError(406, "unsupported Accept {!r}; accept {} or {}".format(accept, JSON, NPY))


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
