"""SageMaker MXNet serving handler for the GluonCV SSD detector: model_fn, input_fn, predict_fn, output_fn.

Ships as code/inference.py beside code/request_handling.py (the helpers it shares with the PyTorch classifier's
handler) and model-symbol.json + model-0000.params (model_artifacts/mxnet_export.py), and runs in the SageMaker
MXNet serving containers, including the Elastic Inference ones (mxnet-inference-eia 1.4.1, 1.5.1, 1.7.0 on
Python 3.6). So it stays valid Python 3.6 and imports only mxnet, numpy, the standard library and
request_handling (the toolkit puts code/ on sys.path): no gluoncv, no pip install, no download (endpoints run
network-isolated). The preprocessing is gluoncv's SSD `transform_test`, rewritten with mx.image / mx.nd.

Contract (the MXNet SSD source document's, one image per request):

  request   Content-Type: application/json
            {"image": "<base64 of a JPEG or PNG file>", "short": 512}
              image  required: standard base64 of the file's bytes (whitespace, such as line breaks, is ignored)
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
  errors    400 bad body (empty, not UTF-8, not JSON, nested too deeply, unknown or missing keys, bad base64,
            not a decodable JPEG/PNG, bad "short"); 406 unsupported Accept; 413 over a serving.limits limit
            (max_request_bytes for the body, max_image_pixels and max_pixels_per_request for the image's
            header size, checked before decoding), the message naming the config key; 415 Content-Type not
            application/json. The Content-Type is checked (input_fn) before the Accept (output_fn): a request
            wrong in both is a 415, and a body error (400, 413) comes before a 406.
            Each is answered with the one-line JSON body {"status": <code>, "error": "<message>"} and the
            worker keeps serving. The MXNet 1.4.1 EIA image's toolkit (sagemaker-inference 1.1.0) passes
            handler functions no context: there the status, body and reason phrase travel in its
            GenericInferenceToolkitError, whose error path sets no Content-Type header.

Elastic Inference: with SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT=true (set by the EIA containers) the
network runs in mx.eia() (MXNet 1.4.1 / 1.5.1 EIA builds) or is partitioned for the "EIA" backend of the
eimx plugin (MXNet 1.7.0 EIA); otherwise, and on CPU MXNet, in mx.cpu().
"""
import json
import logging
import os
import struct

import mxnet as mx
import numpy as np

from request_handling import (JSON, JSON_ACCEPTS, RequestError, answer, check_body, decode_base64, limit, load_json_object,
                              media_types, output, over_limit, short_side, take_json_as_bytes)

logger = logging.getLogger(__name__)
take_json_as_bytes()  # a non-UTF-8 JSON body is then the client's 400, not the toolkit's decoding 500

SYMBOL_FILE = "model-symbol.json"
PARAMS_FILE = "model-0000.params"
INPUT_NAME = "data"
ACCELERATOR_PRESENT_ENV = "SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"

# gluoncv.data.transforms.presets.ssd.transform_test
DEFAULT_SHORT = 512
MAX_SIZE = 1024
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BICUBIC = 2  # OpenCV's INTER_CUBIC: what resize_short_within(interp=2) resolves to

REQUEST_KEYS = ("image", "short")
REQUEST_EXAMPLE = '{"image": "<base64 JPEG/PNG>", "short": N}'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


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
    # The graph is cached, its memory taken from MXNet's pool on each call: neither static_alloc nor static_shape.
    # Every request has its own (H, W), since the aspect ratio is kept: static_shape=True re-planned the graph on
    # almost every call, and static buffers stay sized for the largest input seen. Measured on MXNet 1.4.1 and 1.9.0,
    # neither made requests of changing shapes faster, and they held about 300 MB more per worker after the largest
    # inputs the contract admits (1024 x 1024).
    backend = _eia_backend()
    if backend:
        net.hybridize(backend=backend)
    else:
        net.hybridize()
    logger.info("loaded %s on %s (accelerator present: %s, backend: %s)", SYMBOL_FILE, context, accelerator_present(), backend)
    return net


# ------------------------------------------------------------------------------------ input_fn


def input_fn(request_body, content_type, context=None):
    try:
        return decode_request(request_body, content_type)
    except RequestError as error:
        return answer(error, context)


def decode_request(body, content_type):
    """JSON body (bytes, or str from a toolkit that decoded it) -> the (1, 3, H, W) float32 network input."""
    body = check_body(body, REQUEST_EXAMPLE + " as " + JSON)
    if not content_type:
        raise RequestError(415, "missing Content-Type; send {} with an image".format(JSON))
    if media_types(content_type)[:1] != [JSON]:
        raise RequestError(415, "unsupported content type {!r}; send {} with an image".format(content_type, JSON))
    document = load_json_object(body, REQUEST_KEYS, REQUEST_EXAMPLE)
    if "image" not in document:
        raise RequestError(400, 'JSON body needs "image": the base64 of a JPEG or PNG file')
    short = short_side(document.get("short", DEFAULT_SHORT))
    return preprocess(decode_image(decode_base64(document["image"], '"image"')), short)


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
    # Refuse decompression bombs before decoding them. The one image is all the request decodes, so it is also
    # what serving.limits.max_pixels_per_request bounds.
    for key in ("max_image_pixels", "max_pixels_per_request"):
        if width * height > limit(key):
            raise over_limit(key, '"image" is {}x{} pixels'.format(width, height))
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
    return output(prediction, accept, context, encode_prediction)


def encode_prediction(prediction, accept):
    if not any(media_type in JSON_ACCEPTS for media_type in media_types(accept) or [JSON]):
        raise RequestError(406, "unsupported Accept {!r}; this model answers {}".format(accept, JSON))
    shape, cid, score, bbox = prediction
    usable = np.isfinite(cid).all(axis=1) & np.isfinite(score).all(axis=1) & np.isfinite(bbox).all(axis=1)
    if not usable.all():  # an overflowing box decode: answer an empty row, keep the body strict JSON
        cid, score, bbox = (np.where(usable[:, np.newaxis], values, -1.0).astype(values.dtype) for values in (cid, score, bbox))
    body = {"shape": [int(size) for size in shape], "cid": cid.tolist(), "score": score.tolist(), "bbox": bbox.tolist()}
    return json.dumps(body, allow_nan=False), JSON
