"""The request matrix shared by the in-process and the end-to-end handler tests (tiny model, 3x64x64)."""
import io
import json
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from inference_src.request_handling import LIMITS
from local_serving.client import base64_image_request, example_image, npy

INPUT_SHAPE = (1, 3, 64, 64)
BATCH = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
# An image already at the model's size: with "short": 64 the handler only scales and normalizes it.
MODEL_SIZE_PIXELS = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
NPY_TYPE = "application/x-npy"
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Request:
    """A request the handler must answer with 200."""

    name: str
    body: bytes
    content_type: Optional[str]
    accept: Optional[str] = None
    array: Optional[np.ndarray] = None  # the batch the model sees, where the request carries it directly


@dataclass(frozen=True)
class BadRequest:
    name: str
    body: bytes
    content_type: str
    status: int
    message: str  # a fragment the one-line error must contain
    accept: Optional[str] = None


def gif_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buffer, format="GIF")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A small PNG file that claims width x height pixels (its pixel data is missing: Pillow reads the size first)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def limits_of(container_env: Dict[str, str]) -> Dict[str, int]:
    """serving.limits as the handler reads them from its container environment (defaults where unset)."""
    return {limit.key: int(container_env.get(limit.env) or limit.default) for limit in LIMITS}


# The serving cases' configured limits (tests/conftest.py): all differ from the defaults, so a handler that ignored
# its configuration, or a container environment that dropped a key, would answer the requests below differently.
SERVING_TEST_LIMITS = {"max_request_bytes": 5 * 1024 * 1024, "max_images_per_request": 3, "max_image_pixels": 30_000_000,
                       "max_pixels_per_request": 50_000_000, "max_batch_size": 4}
DEFAULT_LIMITS = {limit.key: limit.default for limit in LIMITS}


def _over(key: str, limits: Dict[str, int]) -> str:
    return f"over the limit of {limits[key]} (serving.limits.{key}"


def bad_requests(limits: Dict[str, int]) -> List[BadRequest]:
    """Every refused request, for a handler configured with `limits` (serving.limits keys)."""
    jpeg = example_image("JPEG")
    tiny_jpeg = example_image("JPEG", size=(40, 40))
    too_many = base64_image_request([tiny_jpeg] * (limits["max_images_per_request"] + 1), short=64)
    # Headers only, never decoded: a square PNG just under the per-image limit, as many as make the request's total too large.
    side = int(limits["max_image_pixels"] ** 0.5)
    count = limits["max_pixels_per_request"] // (side * side) + 1
    too_many_pixels = base64_image_request([png_header(side, side)] * count, short=64) if count <= limits["max_images_per_request"] else None
    over_image = png_header(side + 1, side + 1)
    rows = limits["max_batch_size"] + 1
    return [
        BadRequest("unsupported content type", b"hello", "text/plain", 415, "unsupported content type 'text/plain'"),
        BadRequest("unsupported accept", npy(BATCH[:1]), "application/x-npy", 406, "unsupported Accept 'text/html'", accept="text/html"),
        BadRequest("undecodable image", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg", 400, "body is not a JPEG or PNG image"),
        BadRequest("truncated image", jpeg[: len(jpeg) // 3], "image/jpeg", 400, "damaged JPEG image"),
        BadRequest("gif image", gif_image(), "image/png", 415, "body is a GIF image; send JPEG or PNG"),
        BadRequest("bad base64", b'{"image": "@@not base64@@"}', "application/json", 400, "image 0 is not valid base64"),
        BadRequest("base64 of text", base64_image_request([b"plain text"]), "application/json", 400, "image 0 is not a JPEG or PNG image"),
        BadRequest("short below the input size", base64_image_request([jpeg], short=32), "application/json", 400, '"short" (32) must be at least'),
        BadRequest("invalid json", b'{"instances": [1, 2', "application/json", 400, "body is not valid JSON"),
        BadRequest("deeply nested json", b"[" * 100000, "application/json", 400, "JSON body is nested too deeply"),
        BadRequest("json not utf-8", b'{"instances": [1], "\xff": 1}', "application/json", 400, "JSON body is not UTF-8"),
        BadRequest("short above the range", base64_image_request([jpeg], short=4096), "application/json", 400,
                   '"short" must be an integer between 32 and 1024, got 4096'),
        # 20000 x 20000 is over twice Pillow's own limit: Image.open refuses it before ours is checked.
        BadRequest("decompression bomb", png_header(20000, 20000), "image/png", 413,
                   "body has more than 178956970 pixels, " + _over("max_image_pixels", limits)),
        BadRequest("image over the pixel limit", over_image, "image/png", 413,
                   f"body is {side + 1}x{side + 1} pixels, " + _over("max_image_pixels", limits)),
        BadRequest("too many images", too_many, "application/json", 413,
                   f"the request has {limits['max_images_per_request'] + 1} images, " + _over("max_images_per_request", limits)),
        BadRequest("npy batch over the limit", npy(np.zeros((rows, 3, 64, 64), np.float32)), "application/x-npy", 413,
                   f"the batch has {rows} rows, " + _over("max_batch_size", limits)),
        BadRequest("instances over the limit", json.dumps({"instances": np.zeros((rows, 3, 64, 64), np.uint8).tolist()}).encode(),
                   "application/json", 413, f"the batch has {rows} rows, " + _over("max_batch_size", limits)),
        BadRequest("unknown json key", b'{"pixels": [1, 2]}', "application/json", 400, "unknown JSON key(s) ['pixels']"),
        BadRequest("ragged instances", b'{"instances": [[1, 2], [3]]}', "application/json", 400, "rectangular nested list of numbers"),
        BadRequest("wrong rank", npy(np.zeros((64, 64), np.float32)), "application/x-npy", 400, "got rank 2 shape [64, 64]"),
        BadRequest("wrong shape", npy(np.zeros((1, 3, 32, 32), np.float32)), "application/x-npy", 400, "expected images of shape [3, 64, 64] (CHW), got [3, 32, 32]"),
        BadRequest("wrong dtype", npy(np.array([["a", "b"]])), "application/x-npy", 400, "expected a float32 array, got dtype <U1"),
        BadRequest("corrupt npy", b"\x93NUMPY garbage", "application/x-npy", 400, "body is not a valid .npy array"),
        BadRequest("truncated npy", npy(BATCH)[:-4], "application/x-npy", 400,
                   f"body is not a valid .npy array (its header describes {BATCH.nbytes} bytes of float32 data, the body holds {BATCH.nbytes - 4})"),
        BadRequest("pickled npy", _pickled_npy(), "application/x-npy", 400, "expected a float32 array, got dtype object"),
        # Deep nesting in the header would overflow Python 3.6's parser (a MemoryError, printed to stderr).
        BadRequest("npy header nested deeply", _npy_with_header("{" + "(" * 3000), "application/x-npy", 400,
                   "body is not a valid .npy array (not the header of a numeric array (nested brackets))"),
        BadRequest("npy negative shape", _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2), }"),
                   "application/x-npy", 400, "body is not a valid .npy array (shape (1, -2) is not a tuple of sizes)"),
        BadRequest("empty body", b"", "application/x-npy", 400, "empty request body"),
        BadRequest("over the size limit", b"\0" * (limits["max_request_bytes"] + 1), "application/x-npy", 413,
                   f"request body is {limits['max_request_bytes'] + 1} bytes, " + _over("max_request_bytes", limits)),
    ] + ([BadRequest("too many pixels", too_many_pixels, "application/json", 413,
                     f"the request's images decode to {count * side * side} pixels, " + _over("max_pixels_per_request", limits))]
         if too_many_pixels else [])


def _npy_with_header(header: str) -> bytes:
    """An .npy (format 1.0) body with this header text and no data."""
    text = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def _pickled_npy() -> bytes:
    """An object array: numpy.save pickles it, and np.load(allow_pickle=True) would run the pickle."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def model_size_input() -> np.ndarray:
    """What the model must see for MODEL_SIZE_PIXELS: [0, 1], ImageNet statistics, NCHW."""
    scaled = (MODEL_SIZE_PIXELS / np.float32(255) - IMAGENET_MEAN) / IMAGENET_STD
    return scaled.transpose(2, 0, 1)[np.newaxis].astype(np.float32)


def request_bodies() -> List[Request]:
    """Every accepted request body, without an Accept header (good_requests() crosses them with accepts)."""
    jpeg, png_image, tall_png = example_image("JPEG"), example_image("PNG"), example_image("PNG", size=(100, 180))
    return [
        Request("npy batch", npy(BATCH), NPY_TYPE, array=BATCH),
        Request("npy chw", npy(BATCH[0]), NPY_TYPE, array=BATCH[:1]),
        Request("npy fortran-order float64", npy(np.asfortranarray(BATCH.astype(np.float64))), NPY_TYPE, array=BATCH),
        Request("json instances", json.dumps({"instances": BATCH.tolist()}).encode(), JSON_TYPE, array=BATCH),
        Request("raw jpeg", jpeg, "image/jpeg"),
        Request("raw png", png_image, "image/png"),
        Request("base64 jpeg", base64_image_request([jpeg]), JSON_TYPE),
        Request("base64 png", base64_image_request([png_image]), JSON_TYPE),
        Request("base64 at model size", base64_image_request([png(MODEL_SIZE_PIXELS)], short=64), JSON_TYPE, array=model_size_input()),
        Request("base64 images", base64_image_request([jpeg, tall_png], short=80), JSON_TYPE),
        Request("base64 jpeg short 80", base64_image_request([jpeg], short=80), JSON_TYPE),
        Request("base64 tall png short 80", base64_image_request([tall_png], short=80), JSON_TYPE),
    ]


ACCEPTS = {"npy": NPY_TYPE, "json": JSON_TYPE}


def good_requests() -> List[Request]:
    """request_bodies() x {npy, json} accepts, plus the Accept headers clients really send."""
    crossed = [
        Request(f"{request.name} -> {short}", request.body, request.content_type, accept, request.array)
        for request in request_bodies()
        for short, accept in ACCEPTS.items()
    ]
    bodies = {request.name: request for request in request_bodies()}
    batch, instances = bodies["npy batch"], bodies["json instances"]
    return crossed + [
        Request("npy batch -> no accept", batch.body, NPY_TYPE, None, BATCH),
        Request("npy batch -> */*", batch.body, NPY_TYPE, "*/*", BATCH),
        Request("npy batch -> accept list", batch.body, NPY_TYPE, "text/html, application/x-npy;q=0.9", BATCH),
        Request("json instances with charset -> npy", instances.body, JSON_TYPE + "; charset=utf-8", NPY_TYPE, BATCH),
    ]


# The Content-Type x Accept matrix (as in sagemaker-pytorch-inference's own tests): every request format the
# classifier takes, crossed with every kind of Accept header, each with the status and type it must be answered with.
MATRIX_BODIES = {
    "npy": (lambda: npy(BATCH[:1]), NPY_TYPE),
    "json instances": (lambda: json.dumps({"instances": BATCH[:1].tolist()}).encode(), JSON_TYPE),
    "json image": (lambda: base64_image_request([example_image("JPEG")]), JSON_TYPE),
    "jpeg": (lambda: example_image("JPEG"), "image/jpeg"),
    "png": (lambda: example_image("PNG"), "image/png"),
}
MATRIX_ACCEPTS = {"json": JSON_TYPE, "npy": NPY_TYPE, "any": "*/*", "none": None, "unsupported": "text/html"}


@dataclass(frozen=True)
class MatrixCase:
    request: Request
    status: int
    content_type: str  # of the answer: the prediction's, or the one-line JSON error's


def content_accept_matrix() -> List[MatrixCase]:
    cases = []
    for body_name, (body, content_type) in MATRIX_BODIES.items():
        for accept_name, accept in MATRIX_ACCEPTS.items():
            request = Request(f"matrix {body_name} x {accept_name}", body(), content_type, accept)
            if accept_name == "unsupported":
                cases.append(MatrixCase(request, 406, JSON_TYPE))
            else:
                cases.append(MatrixCase(request, 200, NPY_TYPE if accept == NPY_TYPE else JSON_TYPE))
    return cases
