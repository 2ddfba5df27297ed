"""The async profile's contract, simulated on localhost against the server `make serve` runs.

SageMaker's async endpoint reads the request from S3 (InvokeEndpointAsync's InputLocation), posts it to the
container's /invocations like a real-time endpoint would, and writes the container's answer to S3:

| outcome                          | SageMaker writes                          | here                               |
|----------------------------------|-------------------------------------------|------------------------------------|
| 2xx                              | S3OutputPath/<InferenceId>.out            | OUTPUT_DIR/output/<id>.out         |
| 4xx/5xx, or no answer in time    | S3FailurePath/<InferenceId>-error.out     | OUTPUT_DIR/failures/<id>-error.out |

(Names as config/async_inference.py documents them for the endpoint's S3OutputPath and S3FailurePath.)
Each file appears whole (written aside, then renamed), as an S3 object does, so a poller never reads half of one.
The container is the same either way: only the transport differs, which is why the real local server is the test.
"""
import os
import re
import socket
import urllib.error
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from local_serving import client

OUTPUT_FOLDER, FAILURE_FOLDER = "output", "failures"
# InvokeEndpointAsync's InvocationTimeoutSeconds defaults to 900 s (botocore's sagemaker-runtime model, 1 to 3600).
DEFAULT_TIMEOUT_SECONDS = 900.0
# SageMaker takes any printable InferenceId of 1 to 64 characters (botocore: InferenceId); here it names a file, so
# only characters that are safe in a file name, and never a path.
INFERENCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CONTENT_TYPES_BY_SUFFIX = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                           ".json": "application/json", ".npy": "application/x-npy"}


class NoServer(OSError):
    """Nothing answers on the port: start `make serve` first (no file is written)."""


@dataclass(frozen=True)
class AsyncResult:
    inference_id: str
    succeeded: bool
    location: Path  # the .out file written (under output/ or failures/)
    status: Optional[int]  # the container's HTTP status; None when it did not answer in time
    content_type: str
    body: bytes


def content_type_for(request_file: Path, given: Optional[str] = None) -> str:
    """--content-type, else from the file's extension; ValueError says which to pass."""
    if given:
        return given
    found = CONTENT_TYPES_BY_SUFFIX.get(request_file.suffix.lower())
    if found is None:
        raise ValueError(f"cannot tell the content type of {request_file} from its extension: pass --content-type "
                         f"({', '.join(sorted(set(CONTENT_TYPES_BY_SUFFIX.values())))})")
    return found


def checked_inference_id(inference_id: Optional[str]) -> str:
    """The given id, or a new one as SageMaker generates when none is given."""
    if inference_id is None:
        return str(uuid.uuid4())
    if not INFERENCE_ID.fullmatch(inference_id):
        raise ValueError(f"--inference-id {inference_id!r}: 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit (it names the answer's file)")
    return inference_id


def simulate(url: str, request_file: Path, out_dir: Path, content_type: str, accept: Optional[str] = "application/json",
             inference_id: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> AsyncResult:
    """One async invocation: the request file posted to `url`, the answer written under out_dir as SageMaker would."""
    inference_id = checked_inference_id(inference_id)
    body = request_file.read_bytes()
    try:
        answer = client.invoke(url, body, content_type, accept, timeout=timeout)
    except (TimeoutError, socket.timeout):
        answer = None
    except urllib.error.URLError as error:
        if not isinstance(error.reason, (TimeoutError, socket.timeout)):
            raise NoServer(f"no server at {url} ({error.reason})") from error
        answer = None
    except ConnectionError as error:  # refused or reset before any answer
        raise NoServer(f"no server at {url} ({error})") from error
    if answer is None:  # SageMaker fails a request the container does not answer within InvocationTimeoutSeconds
        message = f"the model did not answer within {timeout:g}s (InvocationTimeoutSeconds)".encode()
        return _write(out_dir, inference_id, False, None, "text/plain", message)
    return _write(out_dir, inference_id, 200 <= answer.status < 300, answer.status, answer.content_type, answer.body)


def _write(out_dir: Path, inference_id: str, succeeded: bool, status: Optional[int], content_type: str,
           body: bytes) -> AsyncResult:
    folder = out_dir / (OUTPUT_FOLDER if succeeded else FAILURE_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    location = folder / (f"{inference_id}.out" if succeeded else f"{inference_id}-error.out")
    partial = folder / f".{location.name}.partial"
    partial.write_bytes(body)
    os.replace(partial, location)  # whole or not at all, like an S3 object
    return AsyncResult(inference_id, succeeded, location, status, content_type, body)
