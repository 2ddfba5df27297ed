"""What both handlers share: the request limits, the one-line error answer, media types, JSON and base64.

Ships as code/request_handling.py beside code/inference.py in both archives (the PyTorch classifier's and
the MXNet detector's); the serving toolkits put code/ on sys.path. It runs in every serving image, the
Python 3.6 EIA ones included, so it stays valid Python 3.6 and imports only the standard library.

A request the client must fix raises RequestError; answer() turns it into the status and the one-line
JSON body {"status": ..., "error": ...} without a traceback, and the worker keeps serving.
"""
import base64
import binascii
import json
import logging
import os
from collections import namedtuple

logger = logging.getLogger(__name__)

JSON = "application/json"
NPY = "application/x-npy"
JSON_ACCEPTS = (JSON, "application/*", "*/*")

# The "short" side of the network input for image requests: one range for both models.
MIN_SHORT, MAX_SHORT = 32, 1024

Limit = namedtuple("Limit", "key env default")
# key: the model config's serving.limits.<key> (config/schema.py RequestLimits); env: how the container gets it.
LIMITS = (
    Limit("max_request_bytes", "INFERENCE_MAX_REQUEST_BYTES", 6 * 1024 * 1024),  # SageMaker's own payload limit
    Limit("max_images_per_request", "INFERENCE_MAX_IMAGES_PER_REQUEST", 8),
    Limit("max_image_pixels", "INFERENCE_MAX_IMAGE_PIXELS", 40 * 1000 * 1000),
    Limit("max_pixels_per_request", "INFERENCE_MAX_PIXELS_PER_REQUEST", 80 * 1000 * 1000),
    Limit("max_batch_size", "INFERENCE_MAX_BATCH_SIZE", 16),
)
LIMITS_BY_KEY = dict((limit.key, limit) for limit in LIMITS)

try:  # Toolkits that cannot pass their context still answer with the status of their error class.
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - toolkits before the error classes existed, and the build machine
    _ToolkitError = None


class RequestError(Exception):
    """A request the client must fix, with the HTTP status it is answered with."""

    def __init__(self, status_code, message):
        super(RequestError, self).__init__(message)
        self.status_code = status_code
        self.message = message

    def body(self):
        return json.dumps({"status": self.status_code, "error": self.message})


def limit(key):
    """The configured value of serving.limits.<key> (its environment variable), else its default."""
    entry = LIMITS_BY_KEY[key]
    return int(os.environ.get(entry.env) or entry.default)


def over_limit(key, what, status=413):
    """A RequestError for `what` (e.g. "request has 9 images") over serving.limits.<key>, naming the key."""
    entry = LIMITS_BY_KEY[key]
    return RequestError(status, "{}, over the limit of {} (serving.limits.{}, {}); {}".format(
        what, limit(key), key, entry.env, _FIXES[key]))


_FIXES = {
    "max_request_bytes": "send a smaller body or batch",
    "max_images_per_request": "send fewer images per request",
    "max_image_pixels": "send a smaller image",
    "max_pixels_per_request": "send fewer or smaller images",
    "max_batch_size": "send a smaller batch",
}


def answer(error, context):
    """Answer `error` without a traceback.

    With the toolkit's context (sagemaker-inference >= 1.7 passes it to handler functions that take one)
    the status is set here and the error travels on to output_fn, which writes its body. Without one,
    the toolkit's error class carries status, body and reason phrase: its old Transformer answers
    "<message>\\n<traceback>", so the message is the one-line JSON body and its first line stays that.
    "from None" keeps the appended traceback to this raise, not the decoding errors behind it.
    """
    logger.info("rejected request (%s): %s", error.status_code, error.message)
    if context is not None:
        context.set_response_status(error.status_code, error.message)
        return error
    if _ToolkitError is not None:
        raise _ToolkitError(error.status_code, error.body(), error.message) from None
    raise error


def output(prediction, accept, context, encode):
    """output_fn of both handlers: the body of an error already answered, else encode(prediction, accept)."""
    if isinstance(prediction, RequestError):
        return prediction.body(), JSON
    try:
        return encode(prediction, accept)
    except RequestError as error:
        return answer(error, context).body(), JSON


def take_json_as_bytes():
    """Have the toolkit hand application/json bodies to input_fn as bytes, undecoded.

    sagemaker-inference's Transformer decodes the types in content_types.UTF8_TYPES as UTF-8 before it
    calls input_fn (every version in the images: 1.1.0 to 1.10.1), so a body that is not UTF-8 fails
    there, as a 500. It imports this module before its first decode; removing JSON from that list lets
    check_body() answer the client's error with a 400. The handlers accept str bodies all the same.
    """
    try:
        from sagemaker_inference import content_types
    except ImportError:  # the build machine, or a test without the toolkit
        return
    while JSON in content_types.UTF8_TYPES:
        content_types.UTF8_TYPES.remove(JSON)


def media_types(header):
    """'application/json; q=0.9, */*' -> ['application/json', '*/*']."""
    return [part.split(";")[0].strip().lower() for part in (header or "").split(",") if part.strip()]


def check_body(body, accepted):
    """The request body, bytes or the bytearray the model servers hand over (not copied: a fresh copy of a
    600 KB body costs about 1 ms in page faults), checked: not empty, within serving.limits.max_request_bytes."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body is None or len(body) == 0:
        raise RequestError(400, "empty request body; send " + accepted)
    if len(body) > limit("max_request_bytes"):
        raise over_limit("max_request_bytes", "request body is {} bytes".format(len(body)))
    return body


def load_json_object(body, keys, example):
    """A JSON object with no keys outside `keys`; `example` shows the client what to send."""
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError(400, "JSON body is not UTF-8 ({}); send {} encoded as UTF-8".format(error, example))
    except ValueError as error:
        raise RequestError(400, "body is not valid JSON: {}".format(error))
    except RecursionError:  # json's decoder recurses once per nesting level
        raise RequestError(400, "JSON body is nested too deeply; send " + example)
    if not isinstance(document, dict):
        raise RequestError(400, "JSON body must be an object: " + example)
    unknown = sorted(set(document) - set(keys))
    if unknown:
        raise RequestError(400, "unknown JSON key(s) {}; accepted keys: {}".format(unknown, list(keys)))
    return document


def decode_base64(value, what):
    """Standard base64 of a file's bytes; whitespace (the line breaks of MIME-wrapped base64) is ignored."""
    if not isinstance(value, str):
        raise RequestError(400, "{} must be a base64 string, got {}".format(what, type(value).__name__))
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, "{} is not valid base64 ({}); encode the file bytes with base64.b64encode".format(what, error))


def short_side(value):
    """The "short" key: an integer from MIN_SHORT to MAX_SHORT."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SHORT <= value <= MAX_SHORT:
        raise RequestError(400, '"short" must be an integer between {} and {}, got {!r}'.format(MIN_SHORT, MAX_SHORT, value))
    return value
