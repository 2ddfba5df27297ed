"""SageMaker MXNet serving handler for the GluonCV SSD detector: model_fn, input_fn, predict_fn, output_fn.

Ships as code/inference.py beside model-symbol.json + model-0000.params (model_artifacts/mxnet_export.py)
and runs in the SageMaker MXNet serving containers, including the Elastic Inference ones
(mxnet-inference-eia 1.4.1, 1.5.1, 1.7.0 on Python 3.6). So it stays valid Python 3.6 and imports only
mxnet, numpy and the standard library: no gluoncv, no pip install, no download (endpoints run
network-isolated). The preprocessing is gluoncv's SSD `transform_test`, rewritten with mx.image / mx.nd.

Contract (the MXNet SSD source document's, one image per request):

  request   Content-Type: application/json
            {"image": "<base64 of a JPEG or PNG file>", "short": 512}
              image  required: standard base64 of the file's bytes (line breaks are ignored)
              short  optional integer 32..1024, default 512 (the detector's training size; the source
                     document's handler defaulted to 224): the short side of the network input
  response  200, Content-Type: application/json (for Accept application/json, application/*, */* or none)
            {"shape": [1, 3, H, W], "cid": [[c], ...], "score": [[s], ...], "bbox": [[x1, y1, x2, y2], ...]}
              shape  the network input: the image resized (bicubic) so its short side is `short`, aspect kept,
                     the long side at most 1024 (then the short side is smaller), normalized with ImageNet
                     mean/std
              cid    100 rows of [class index] as floats, into export.json's class_names; -1.0 marks an empty row
              score  100 rows of [confidence 0..1], highest first; -1.0 in empty rows
              bbox   100 rows of corners in pixels of the resized W x H input (x * original width / W and
                     y * original height / H map them back); -1.0 in empty rows
            Strict JSON: a row with a non-finite value (an overflowing box decode) is sent as an empty row.
  errors    400 bad body (empty, not JSON, unknown or missing keys, bad base64, not a decodable JPEG/PNG,
            bad "short"), 406 unsupported Accept, 413 body or image too large, 415 Content-Type not
            application/json: each answered with the one-line JSON body {"status": <code>, "error": "<message>"}.
            The worker keeps serving. The MXNet 1.4.1 EIA image's toolkit (sagemaker-inference 1.1.0) passes
            handler functions no context: there the status, body and reason phrase travel in its
            GenericInferenceToolkitError, whose error path sets no Content-Type header.

Elastic Inference: with SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT=true (set by the EIA containers) the
network runs in mx.eia() (MXNet 1.4.1 / 1.5.1 EIA builds) or is partitioned for the "EIA" backend of the
eimx plugin (MXNet 1.7.0 EIA); otherwise, and on CPU MXNet, in mx.cpu().
"""
import base64
import binascii
import json
import logging
import os
import struct

import mxnet as mx
import numpy as np

logger = logging.getLogger(__name__)

SYMBOL_FILE = "model-symbol.json"
PARAMS_FILE = "model-0000.params"
INPUT_NAME = "data"
ACCELERATOR_PRESENT_ENV = "SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"
MAX_REQUEST_BYTES_ENV = "INFERENCE_MAX_REQUEST_BYTES"
DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024  # SageMaker's real-time invocation payload limit
MAX_IMAGE_PIXELS = 40 * 1000 * 1000  # refuse decompression bombs before decoding them

# gluoncv.data.transforms.presets.ssd.transform_test
DEFAULT_SHORT = 512
MIN_SHORT, MAX_SHORT = 32, 1024
MAX_SIZE = 1024
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BICUBIC = 2  # OpenCV's INTER_CUBIC: what resize_short_within(interp=2) resolves to

JSON = "application/json"
REQUEST_KEYS = ("image", "short")
JSON_ACCEPTS = (JSON, "application/*", "*/*")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

try:  # Toolkits that cannot pass their context still answer with the status of their error class.
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


def _answer(error, context):
    """Answer a RequestError without a traceback.

    With the toolkit's context (sagemaker-inference passes it to handler functions that take one) the
    status is set here and the error travels on to output_fn, which writes its body. Without one the
    toolkit's error class carries status and body; its own handler would append a traceback to any
    other exception.
    """
    logger.info("rejected request (%s): %s", error.status_code, error.message)
    if context is not None:
        context.set_response_status(error.status_code, error.message)
        return error
    if _ToolkitError is not None:
        raise _ToolkitError(error.status_code, error.body(), error.message)
    raise error


# ------------------------------------------------------------------------------------ model_fn


def accelerator_present():
    return os.environ.get(ACCELERATOR_PRESENT_ENV) == "true"


def model_context():
    """mx.eia() on the MXNet 1.4.1 / 1.5.1 EIA builds with an accelerator attached, else mx.cpu()."""
    if accelerator_present() and hasattr(mx, "eia"):
        return mx.eia()
    return mx.cpu()


def _eia_backend():
    """The backend name "EIA" on MXNet 1.7.0 EIA (its eimx plugin partitions the graph), else None."""
    if not accelerator_present() or hasattr(mx, "eia"):
        return None
    try:
        import eimx  # noqa: F401  (registers the backend)
    except ImportError:
        logger.warning("%s=true but this MXNet has neither mx.eia() nor eimx: running on the CPU", ACCELERATOR_PRESENT_ENV)
        return None
    return "EIA"


def model_fn(model_dir):
    """The exported SymbolBlock (the MXNet toolkit accepts only a Gluon Block or a Module here)."""
    context = model_context()
    net = mx.gluon.SymbolBlock.imports(
        os.path.join(model_dir, SYMBOL_FILE), [INPUT_NAME], os.path.join(model_dir, PARAMS_FILE), ctx=context
    )
    backend = _eia_backend()
    if backend:
        net.hybridize(backend=backend, static_alloc=True, static_shape=True)
    else:
        net.hybridize(static_alloc=True, static_shape=True)
    logger.info("loaded %s on %s (accelerator present: %s, backend: %s)", SYMBOL_FILE, context, accelerator_present(), backend)
    return net


# ------------------------------------------------------------------------------------ input_fn


def input_fn(request_body, content_type, context=None):
    try:
        return decode_request(request_body, content_type)
    except RequestError as error:
        return _answer(error, context)


def decode_request(body, content_type):
    """JSON body (str or bytes) -> the (1, 3, H, W) float32 network input."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not body:
        raise RequestError(400, 'empty request body; send {"image": "<base64 JPEG/PNG>", "short": N} as ' + JSON)
    limit = int(os.environ.get(MAX_REQUEST_BYTES_ENV) or DEFAULT_MAX_REQUEST_BYTES)
    if len(body) > limit:
        raise RequestError(413, "request body is {} bytes, over the {}-byte limit ({})".format(len(body), limit, MAX_REQUEST_BYTES_ENV))
    if not content_type:
        raise RequestError(415, "missing Content-Type; send {} with an image".format(JSON))
    if _media_types(content_type)[:1] != [JSON]:
        raise RequestError(415, "unsupported content type {!r}; send {} with an image".format(content_type, JSON))
    try:
        document = json.loads(bytes(body).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, "body is not valid JSON: {}".format(error))
    except RecursionError:  # json's decoder recurses once per nesting level
        raise RequestError(400, 'JSON body is nested too deeply; send {"image": "<base64 JPEG/PNG>", "short": N}')
    if not isinstance(document, dict):
        raise RequestError(400, 'JSON body must be an object: {"image": "<base64 JPEG/PNG>", "short": N}')
    unknown = sorted(set(document) - set(REQUEST_KEYS))
    if unknown:
        raise RequestError(400, "unknown JSON key(s) {}; accepted keys: {}".format(unknown, list(REQUEST_KEYS)))
    if "image" not in document:
        raise RequestError(400, 'JSON body needs "image": the base64 of a JPEG or PNG file')
    short = _short_side(document.get("short", DEFAULT_SHORT))
    return preprocess(decode_image(_base64(document["image"])), short)


def _media_types(header):
    """'application/json; charset=utf-8, */*' -> ['application/json', '*/*']."""
    return [part.split(";")[0].strip().lower() for part in (header or "").split(",") if part.strip()]


def _base64(value):
    if not isinstance(value, str):
        raise RequestError(400, '"image" must be a base64 string, got {}'.format(type(value).__name__))
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, '"image" is not valid base64 ({}); encode the file bytes with base64.b64encode'.format(error))


def _short_side(value):
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SHORT <= value <= MAX_SHORT:
        raise RequestError(400, '"short" must be an integer between {} and {}, got {!r}'.format(MIN_SHORT, MAX_SHORT, value))
    return value


def image_size(data):
    """(format, width, height) from a PNG or JPEG header, without decoding; RequestError otherwise."""
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise RequestError(400, '"image" is a damaged PNG file (no IHDR header)')
        width, height = struct.unpack(">II", data[16:24])
        return "PNG", width, height
    if data.startswith(JPEG_SIGNATURE):
        return ("JPEG",) + _jpeg_size(data)
    raise RequestError(400, '"image" is not a JPEG or PNG file')


def _jpeg_size(data):
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            position += 2
            continue
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height
        position += 2 + length
    raise RequestError(400, '"image" is a damaged JPEG file (no frame header)')


def decode_image(data):
    """File bytes -> (H, W, 3) uint8 RGB NDArray, decoded by MXNet's OpenCV like gluoncv's loaders."""
    kind, width, height = image_size(data)
    if width * height > MAX_IMAGE_PIXELS:
        raise RequestError(413, '"image" is {}x{} pixels, over the {} pixel limit'.format(width, height, MAX_IMAGE_PIXELS))
    if not width or not height:
        raise RequestError(400, '"image" is a {} file of {}x{} pixels'.format(kind, width, height))
    try:
        image = mx.image.imdecode(data, flag=1, to_rgb=1)
        image.wait_to_read()  # MXNet decodes asynchronously: a damaged file fails here
    except mx.base.MXNetError:
        raise RequestError(400, '"image" is a damaged {} file that cannot be decoded'.format(kind))
    return image


def preprocess(image, short):
    """gluoncv's SSD transform_test: resize_short_within(short, 1024, bicubic), to_tensor, normalize."""
    height, width = image.shape[:2]
    scale = float(short) / min(height, width)
    if np.round(scale * max(height, width)) > MAX_SIZE:
        scale = float(MAX_SIZE) / max(height, width)
    new_width, new_height = int(np.round(width * scale)), int(np.round(height * scale))
    if min(new_width, new_height) < 1:
        raise RequestError(400, '"image" is {}x{} pixels: too elongated to fit {} pixels on its long side'.format(width, height, MAX_SIZE))
    resized = mx.image.imresize(image, new_width, new_height, interp=BICUBIC)
    tensor = mx.nd.image.normalize(mx.nd.image.to_tensor(resized), mean=MEAN, std=STD)
    return tensor.expand_dims(0)


# ------------------------------------------------------------------------------------ predict_fn


def predict_fn(input_data, model, context=None):
    """(shape, cid, score, bbox) of the one image, as the source document's predict_fn returned them."""
    if isinstance(input_data, RequestError):
        return input_data  # already answered by input_fn; output_fn writes the body
    cid, score, bbox = model(input_data.as_in_context(model_context()))
    return tuple(input_data.shape), cid[0].asnumpy(), score[0].asnumpy(), bbox[0].asnumpy()


# ------------------------------------------------------------------------------------ output_fn


def output_fn(prediction, accept, context=None):
    if isinstance(prediction, RequestError):
        return prediction.body(), JSON
    try:
        return encode_prediction(prediction, accept)
    except RequestError as error:
        return _answer(error, context).body(), JSON


def encode_prediction(prediction, accept):
    if not any(media_type in JSON_ACCEPTS for media_type in _media_types(accept) or [JSON]):
        raise RequestError(406, "unsupported Accept {!r}; this model answers {}".format(accept, JSON))
    shape, cid, score, bbox = prediction
    usable = np.isfinite(cid).all(axis=1) & np.isfinite(score).all(axis=1) & np.isfinite(bbox).all(axis=1)
    if not usable.all():  # an overflowing box decode: answer an empty row, keep the body strict JSON
        cid, score, bbox = (np.where(usable[:, np.newaxis], values, -1.0).astype(values.dtype) for values in (cid, score, bbox))
    body = {"shape": [int(size) for size in shape], "cid": cid.tolist(), "score": score.tolist(), "bbox": bbox.tolist()}
    return json.dumps(body, allow_nan=False), JSON
