"""The worst requests the default limits admit, served, with each worker's peak resident memory measured.

The example classifier (example-resnet, 3x224x224) is built for a runtime and served by that runtime's own
stack with one worker; the requests below go in one by one, the largest of each kind that serving.limits
(defaults) lets through, and after each the worker's peak RSS (VmHWM, the kernel's high-water mark) is read.
The peak must stay under the figure the README states (its "Request limits" table), and that figure under
the memory of the smallest host of every profile divided by the workers that host runs (config/workers.py).
"""
import io
import json
import re
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import psutil
import pytest

from inference_src.request_handling import LIMITS_BY_KEY
from local_serving.client import base64_image_request, invoke, npy
from tests.conftest import REPO, build_for, make_config

pytestmark = pytest.mark.slow

EXAMPLE = {"model": "example-resnet", "input_shape": [1, 3, 224, 224]}
LIMIT = {key: entry.default for key, entry in LIMITS_BY_KEY.items()}
# Stated in the README's "Request limits" table: a worker's peak RSS after the worst requests, per runtime.
STATED_PEAK_MIB = {"eia-1.5.1": 900, "cpu": 1000}
RUNTIME_OF = {"eia-1.5.1": "eia-pytorch-1.5.1", "cpu": "pytorch-2.6.0"}
PROFILE_EDITS = {"eia-1.5.1": lambda m: None, "cpu": lambda m: m["serving"].update(profile="cpu")}


@dataclass(frozen=True)
class Worst:
    name: str
    body: bytes
    content_type: str


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    """A flat image: it compresses to almost nothing, so the pixel limit, not the body limit, is what binds."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), (90, 140, 200, 255)[: len(mode)]).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def worst_requests() -> List[Worst]:
    row_bytes = 3 * 224 * 224 * 4
    rows = min(LIMIT["max_batch_size"], (LIMIT["max_request_bytes"] - 128) // row_bytes)
    side = int(LIMIT["max_image_pixels"] ** 0.5)  # the largest square image admitted
    per_image = int((LIMIT["max_pixels_per_request"] // LIMIT["max_images_per_request"]) ** 0.5)
    requests = [
        Worst(f"npy batch of {rows} (the body limit)", npy(np.ones((rows, 3, 224, 224), np.float32)), "application/x-npy"),
        Worst(f"instances batch of {LIMIT['max_batch_size']} (the batch limit)",
              json.dumps({"instances": np.zeros((LIMIT["max_batch_size"], 3, 224, 224), np.uint8).tolist()},
                         separators=(",", ":")).encode(), "application/json"),
        Worst(f"PNG {side}x{side} RGB (the image limit)", _png(side, side), "image/png"),
        Worst(f"PNG {side}x{side} RGBA (converted to RGB)", _png(side, side, "RGBA"), "image/png"),
        Worst(f"JPEG {side}x{side} (decoded at 1/8)", _jpeg(side, side), "image/jpeg"),
        Worst("JPEG 40000x1000 (long and thin)", _jpeg(40000, 1000), "image/jpeg"),
        Worst(f"{LIMIT['max_images_per_request']} PNGs of {per_image}x{per_image} (the per-request pixel limit)",
              base64_image_request([_png(per_image, per_image)] * LIMIT["max_images_per_request"]), "application/json"),
    ]
    for request in requests:
        assert len(request.body) <= LIMIT["max_request_bytes"], (request.name, len(request.body))
    return requests


def _peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def _model_worker(endpoint) -> psutil.Process:
    [worker] = endpoint.model_workers()
    return worker


@pytest.fixture(scope="module", params=list(STATED_PEAK_MIB))
def measured(request, tmp_path_factory) -> Dict[str, object]:
    from config import load_config
    from config.container import container_environment
    from local_serving.server import LocalEndpoint
    from runtimes import RUNTIMES

    case = request.param
    root = tmp_path_factory.mktemp(f"worst-{case}")
    config = make_config(root / "config", lambda m: (m["build"].update(EXAMPLE), PROFILE_EDITS[case](m)))
    build_for(config, root / "artifacts")
    deployment = load_config(config).environment("prod").models[0]
    environment = container_environment(deployment)
    environment["SAGEMAKER_MODEL_SERVER_WORKERS"] = "1"  # a per-worker figure
    artifact = root / "artifacts" / "image-classifier" / "model.tar.gz"
    peaks = {}
    with LocalEndpoint(artifact, EXAMPLE["input_shape"], root / "work", environment, RUNTIMES[RUNTIME_OF[case]]) as endpoint:
        worker = _model_worker(endpoint)
        peaks["after loading (and the readiness probe)"] = _peak_rss_mib(worker.pid)
        for worst in worst_requests():
            answer = invoke(endpoint.url, worst.body, worst.content_type, "application/json", timeout=300)
            assert answer.status == 200, (worst.name, answer.status, answer.body[:500])
            peaks[worst.name] = _peak_rss_mib(worker.pid)
        assert _model_worker(endpoint).pid == worker.pid  # the same worker answered all of them
    print(f"\npeak RSS of one worker, {case} ({RUNTIME_OF[case]}), after each request:")
    for name, mib in peaks.items():
        print(f"  {mib:7.0f} MiB  {name}")
    return {"case": case, "peaks": peaks, "peak": max(peaks.values())}


def _smallest_budget_mib(tmp_path) -> Dict[str, float]:
    """Per profile of the example config: its host's memory (MiB) divided by the workers it runs there."""
    from config import load_config
    from config.workers import instance_types, worker_plan

    budgets = {}
    for profile in ("eia", "gpu", "cpu", "serverless"):
        config = load_config(make_config(tmp_path / profile, lambda m, p=profile: (m["build"].update(EXAMPLE), m["serving"].update(profile=p))))
        deployment = config.environment("prod").models[0]
        target = deployment.target
        memory_mib = target.memory_size_mb if target.is_serverless else instance_types()[target.instance_type]["memory_gib"] * 1024
        budgets[profile] = memory_mib / worker_plan(deployment).workers
    return budgets


def test_the_worst_admitted_requests_stay_under_the_stated_peak(measured):
    assert measured["peak"] <= STATED_PEAK_MIB[measured["case"]], measured["peaks"]


def test_the_stated_peak_fits_the_smallest_host_of_every_profile(tmp_path):
    budgets = _smallest_budget_mib(tmp_path)
    print("\nmemory per worker on each profile's host:", {p: f"{mib:.0f} MiB" for p, mib in budgets.items()})
    assert max(STATED_PEAK_MIB.values()) < min(budgets.values()), budgets


def test_the_readme_states_the_same_peaks():
    readme = (REPO / "README.md").read_text()
    for case, mib in STATED_PEAK_MIB.items():
        assert re.search(rf"\| {re.escape(RUNTIME_OF[case])} [^\n]*\| ≤ {mib} MiB \|", readme), case
