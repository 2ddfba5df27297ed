"""The request matrix shared by the in-process and the end-to-end handler tests (tiny model, 3x64x64)."""
import io
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from local_serving.client import base64_image_request, example_image, npy

INPUT_SHAPE = (1, 3, 64, 64)
BATCH = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)


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


def bad_requests(max_request_bytes: int) -> List[BadRequest]:
    jpeg = example_image("JPEG")
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
        BadRequest("unknown json key", b'{"pixels": [1, 2]}', "application/json", 400, "unknown JSON key(s) ['pixels']"),
        BadRequest("ragged instances", b'{"instances": [[1, 2], [3]]}', "application/json", 400, "rectangular nested list of numbers"),
        BadRequest("wrong rank", npy(np.zeros((64, 64), np.float32)), "application/x-npy", 400, "got rank 2 shape [64, 64]"),
        BadRequest("wrong shape", npy(np.zeros((1, 3, 32, 32), np.float32)), "application/x-npy", 400, "expected images of shape [3, 64, 64] (CHW), got [3, 32, 32]"),
        BadRequest("wrong dtype", npy(np.array([["a", "b"]])), "application/x-npy", 400, "expected a float32 array, got dtype <U1"),
        BadRequest("corrupt npy", b"\x93NUMPY garbage", "application/x-npy", 400, "body is not a valid .npy array"),
        BadRequest("empty body", b"", "application/x-npy", 400, "empty request body"),
        BadRequest("over the size limit", b"\0" * (max_request_bytes + 1), "application/x-npy", 413, f"over the {max_request_bytes}-byte limit"),
    ]
