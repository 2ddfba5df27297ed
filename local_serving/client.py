"""Calls to a SageMaker-style /invocations endpoint, and example payloads for them."""
import base64
import http.client
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

EXAMPLE_IMAGE_SIZE = (320, 240)


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self):
        return json.loads(self.body)


def invoke(url: str, body: bytes, content_type: str, accept: Optional[str] = None, timeout: float = 30) -> Response:
    """POST to /invocations; 4xx/5xx answers are returned, not raised."""
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, answer.headers.get("Content-Type", ""), answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers.get("Content-Type", ""), error.read())


class Connection:
    """One keep-alive HTTP/1.1 connection to an endpoint, as a load balancer or an SDK client keeps one: no TCP
    handshake per request (about 1 ms on loopback). When the server closes it, the next call opens another."""

    def __init__(self, url: str, timeout: float = 30):
        parts = urllib.parse.urlsplit(url)
        self.path = parts.path or "/"
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def invoke(self, body: bytes, content_type: str, accept: Optional[str] = None) -> Response:
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        self.connection.request("POST", self.path, body, headers)
        answer = self.connection.getresponse()
        return Response(answer.status, answer.headers.get("Content-Type", ""), answer.read())

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def example_image(image_format: str = "JPEG", size: Tuple[int, int] = EXAMPLE_IMAGE_SIZE) -> bytes:
    """A deterministic test picture (gradient, disc and bar), so no image file ships with the repo."""
    from PIL import Image, ImageDraw

    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[np.newaxis, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, np.newaxis]
    pixels = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) / 2], axis=-1)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, width // 2, height // 2 + height // 4), fill=(230, 40, 40))
    draw.rectangle((width * 2 // 3, height // 6, width * 3 // 4, height * 5 // 6), fill=(20, 20, 160))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def base64_image_request(images: Sequence[bytes], short: Optional[int] = None) -> bytes:
    """The JSON contract of the MXNet SSD source document: {"image": <base64>, "short": N}."""
    encoded = [base64.b64encode(image).decode("ascii") for image in images]
    document = {"image": encoded[0]} if len(encoded) == 1 else {"images": encoded}
    if short is not None:
        document["short"] = short
    return json.dumps(document).encode()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
