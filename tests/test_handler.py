"""The packaged handler on each serving runtime, through that runtime's own SageMaker toolkit, in process.

Nothing here imports torch: every forward runs in the runtime's venv (.venv-runtimes/<name>), where
tests/handler_driver.py loads the case's model.tar.gz through the image's toolkit and model server
Context (EIA 1.5.1 / 1.3.1: sagemaker-pytorch-inference 1.5.1.post1 on sagemaker-inference 1.5.11 with
multi-model-server's Context, which calls handler functions without a context; 2.6.0: 2.0.25 with
TorchServe's Context) and answers the whole request matrix. One driver process per case and mode; the
tests below read its answers. The reference logits come from model.pt run directly in the same venv.

The EIA builds of torch are not public: with tests/standins on sys.path the driver gives CPU torch the
EI entry points (torcheia.jit.attach_eia, torch_eia 1.3.1's two-argument optimized_execution), which
record how the handler used them.
"""
import base64
import io
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import pytest

from tests.conftest import REPO
from tests.payloads import (BATCH, DEFAULT_LIMITS, IMAGENET_MEAN, IMAGENET_STD, INPUT_SHAPE, JSON_TYPE, NPY_TYPE,
                            SERVING_TEST_LIMITS, Request, bad_requests, content_accept_matrix, good_requests, limits_of, npy, png,
                            request_bodies)

DRIVER = REPO / "tests" / "handler_driver.py"
STANDINS = REPO / "tests" / "standins"
ACCELERATOR_ENV = "SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"
LOWERED_LIMIT = 60000  # between one CHW image (49,280 bytes as .npy) and the batch of two


@dataclass(frozen=True)
class Run:
    """One driver process: a serving case, the accelerator variable, and which requests it answers."""

    case: str
    env: Dict[str, str] = field(default_factory=dict)
    standins: bool = False
    matrix: bool = True  # the whole request matrix, or only the lowered-limit pair


RUNS = {
    "eia-1.5.1 accelerator": Run("eia-1.5.1", {ACCELERATOR_ENV: "true"}, standins=True),
    "eia-1.5.1 no accelerator": Run("eia-1.5.1", {}, standins=True),  # variable unset
    "eia-1.5.1 accelerator=false": Run("eia-1.5.1", {ACCELERATOR_ENV: "false", "INFERENCE_MAX_REQUEST_BYTES": str(LOWERED_LIMIT)},
                                       standins=True, matrix=False),
    "eia-1.3.1 accelerator": Run("eia-1.3.1", {ACCELERATOR_ENV: "true"}, standins=True),
    "eia-1.3.1 no accelerator": Run("eia-1.3.1", {}, standins=True),
    "eia-1.3.1 accelerator=false": Run("eia-1.3.1", {ACCELERATOR_ENV: "false", "INFERENCE_MAX_REQUEST_BYTES": str(LOWERED_LIMIT)},
                                       standins=True, matrix=False),
    "gpu": Run("gpu"),
    "cpu": Run("cpu"),
    "serverless": Run("serverless"),
    "cpu aoti": Run("cpu-aoti"),
}
MATRIX_RUNS = [name for name, run in RUNS.items() if run.matrix]
ACCELERATED_RUNS = ["eia-1.5.1 accelerator", "eia-1.3.1 accelerator"]
EIA_RUNS_WITHOUT_ACCELERATOR = [name for name in RUNS if name.startswith("eia-") and name not in ACCELERATED_RUNS]
MISSING_CONTENT_TYPE = Request("missing content type", npy(BATCH[:1]), None)
LIMIT_REQUESTS = [Request("npy chw under the lowered limit", npy(BATCH[0]), NPY_TYPE, NPY_TYPE, BATCH[:1]),
                  Request("npy batch over the lowered limit", npy(BATCH), NPY_TYPE, NPY_TYPE)]
GOOD = {request.name: request for request in good_requests()}
MATRIX = content_accept_matrix()


# ------------------------------------------------------------------------------------ the driver runs


@dataclass
class Answer:
    status: int
    phrase: Optional[str]
    content_type: Optional[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def array(self) -> np.ndarray:
        assert self.status == 200 and self.content_type == NPY_TYPE, (self.status, self.content_type, self.body[:500])
        return np.load(io.BytesIO(self.body), allow_pickle=False)

    def json(self):
        assert self.status == 200 and self.content_type == JSON_TYPE, (self.status, self.content_type, self.body[:500])
        return json.loads(self.body)


class DriverResult:
    def __init__(self, run: Run, document: dict, case):
        self.run, self.document, self.case = run, document, case
        self.answers = {
            name: Answer(r["status"], r.get("phrase"), r.get("content_type"),
                         base64.b64decode(r["body_b64"]) if "body_b64" in r else r["text"].encode("utf-8"))
            for name, r in document["responses"].items()
        }

    def reference(self, name: str) -> np.ndarray:
        return _from_b64(self.document["reference"][name])

    @property
    def eia(self) -> dict:
        return self.document["eia"]

    @property
    def forwards(self) -> int:
        """How many requests reached the model: answered, or refused only by output_fn (Accept)."""
        return sum(1 for answer in self.answers.values() if answer.status in (200, 406))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _from_b64(encoded: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(encoded)), allow_pickle=False)


def _limits(case) -> Dict[str, int]:
    return limits_of(case.container_environment())


def _requests_for(run: Run, case):
    if not run.matrix:
        return LIMIT_REQUESTS
    return good_requests() + bad_requests(_limits(case)) + [MISSING_CONTENT_TYPE] + [m.request for m in MATRIX]


def _drive(run: Run, case, directory) -> DriverResult:
    requests = _requests_for(run, case)
    job = {
        "model_dir": str(case.model_dir),
        "model_server": case.runtime.model_server,
        "standins": str(STANDINS) if run.standins else None,
        "requests": [{"name": r.name, "body_b64": _b64(r.body), "content_type": r.content_type, "accept": r.accept} for r in requests],
        "reference": {r.name: _b64(npy(r.array)) for r in requests if getattr(r, "array", None) is not None},
        "preprocess": [{"name": name, "image_b64": _b64(data), "input_shape": list(INPUT_SHAPE), "short": short}
                       for name, (data, short) in PREPROCESS_IMAGES.items()] if run.matrix else [],
    }
    job_file = directory / "job.json"
    job_file.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k not in (ACCELERATOR_ENV, "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(case.container_environment())
    env.update(run.env)
    env["OMP_NUM_THREADS"] = "1"  # 2 cores, other work beside us
    process = subprocess.run([str(case.runtime.python), str(DRIVER), str(job_file)], cwd=directory, env=env,
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    line = [line for line in process.stdout.splitlines() if line.startswith("DRIVER-RESULT ")]
    assert line, process.stdout[-3000:] + process.stderr[-3000:]
    return DriverResult(run, json.loads(line[-1][len("DRIVER-RESULT "):]), case)


@pytest.fixture(scope="module")
def driven(serving_case, tmp_path_factory):
    """driven("eia-1.5.1 accelerator"): that run's answers, one driver process per run for the module."""
    results: Dict[str, DriverResult] = {}

    def get(name: str) -> DriverResult:
        if name not in results:
            run = RUNS[name]
            results[name] = _drive(run, serving_case(run.case), tmp_path_factory.mktemp("driver-" + name.replace(" ", "-").replace("=", "-")))
        return results[name]

    return get


def _geometry_image(scale: int) -> np.ndarray:
    """146x73 (short side 73, the default for a 64 crop): left half red, right half blue."""
    pixels = np.zeros((73 * scale, 146 * scale, 3), np.uint8)
    pixels[:, : 73 * scale, 0] = 255
    pixels[:, 73 * scale:, 2] = 255
    return pixels


GEOMETRY_IMAGES = {"scale 1": _geometry_image(1), "scale 2": _geometry_image(2)}
# EXIF orientation -> the transpose that stores an upright image so that this orientation shows it upright again.
STORED_AS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_90", 7: "TRANSVERSE", 8: "ROTATE_270"}
LARGE_JPEG_SIZE, LARGE_JPEG_SHORT = (1600, 1200), 80


def _jpeg(image, orientation=None) -> bytes:
    from PIL import Image

    buffer, options = io.BytesIO(), {"quality": 95}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _oriented(orientation: int) -> bytes:
    """The scale-1 geometry image stored transposed, with the EXIF orientation that shows it upright."""
    from PIL import Image

    upright = Image.fromarray(GEOMETRY_IMAGES["scale 1"], "RGB")
    return _jpeg(upright.transpose(getattr(Image.Transpose, STORED_AS[orientation])), orientation)


def _large_jpeg() -> bytes:
    """Smooth content (a photo-like gradient), 1600x1200: 15 times the 80-pixel short side asked for."""
    from local_serving.client import example_image
    return example_image("JPEG", size=LARGE_JPEG_SIZE)


PREPROCESS_IMAGES = {
    **{name: (png(pixels), None) for name, pixels in GEOMETRY_IMAGES.items()},
    **{f"orientation {o}": (_oriented(o), None) for o in STORED_AS},
    "large jpeg": (_large_jpeg(), LARGE_JPEG_SHORT),
}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------ the request matrix, per runtime

# Arrays reach the model unchanged (the image one, at the model size, has its own test below).
ARRAY_REQUESTS = [name for name, r in GOOD.items() if r.array is not None and NPY_TYPE in (r.accept or "") and not name.startswith("base64")]


@pytest.mark.parametrize("request_name", list(GOOD))
@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_every_accepted_request_is_answered_200_in_the_accepted_type(driven, run_name, request_name):
    answer = driven(run_name).answers[request_name]
    accept = GOOD[request_name].accept
    expected_type = NPY_TYPE if accept and NPY_TYPE in accept else JSON_TYPE
    assert (answer.status, answer.content_type) == (200, expected_type), answer.body[:1000]


@pytest.mark.parametrize("request_name", ARRAY_REQUESTS)
@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_npy_logits_equal_a_direct_forward_of_model_pt_in_the_same_runtime(driven, run_name, request_name):
    result = driven(run_name)
    logits, expected = result.answers[request_name].array(), result.reference(request_name)
    assert logits.shape == expected.shape == (len(GOOD[request_name].array), 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("body_name", [r.name for r in request_bodies()])
@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_json_answers_are_the_top_5_classes_of_the_same_logits(driven, run_name, body_name):
    result = driven(run_name)
    logits = result.answers[f"{body_name} -> npy"].array()
    answer = result.answers[f"{body_name} -> json"].json()
    probabilities = _softmax(logits.astype(np.float64))
    assert answer["shape"] == list(logits.shape)
    assert len(answer["predictions"]) == len(logits)
    for row, top in zip(probabilities, answer["predictions"]):
        assert [p["class"] for p in top] == list(np.argsort(-row)[:5])
        assert [p["score"] for p in top] == pytest.approx(list(np.sort(row)[::-1][:5]), abs=2e-6)


@pytest.mark.parametrize("accept", ["no accept", "*/*"])
@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_without_a_specific_accept_the_answer_is_json(driven, run_name, accept):
    result = driven(run_name)
    assert result.answers[f"npy batch -> {accept}"].json() == result.answers["npy batch -> json"].json()


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_raw_image_bodies_and_the_base64_json_contract_agree(driven, run_name, image_format):
    result = driven(run_name)
    raw = result.answers[f"raw {image_format} -> npy"].array()
    via_json = result.answers[f"base64 {image_format} -> npy"].array()
    assert raw.shape == (1, 10)
    np.testing.assert_array_equal(raw, via_json)


@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_a_base64_batch_answers_one_row_per_image(driven, run_name):
    result = driven(run_name)
    batch = result.answers["base64 images -> npy"].array()
    singles = [result.answers[f"{name} -> npy"].array()[0] for name in ("base64 jpeg short 80", "base64 tall png short 80")]
    assert batch.shape == (2, 10)
    np.testing.assert_allclose(batch, np.stack(singles), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_an_image_at_the_model_size_is_scaled_and_normalized_with_imagenet_statistics(driven, run_name):
    """The reference is model.pt on the input computed here with numpy: (pixels / 255 - mean) / std, NCHW."""
    result = driven(run_name)
    np.testing.assert_allclose(result.answers["base64 at model size -> npy"].array(), result.reference("base64 at model size -> npy"),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad_name", [bad.name for bad in bad_requests(DEFAULT_LIMITS)])
@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_bad_requests_get_their_4xx_and_a_one_line_json_error(driven, run_name, bad_name):
    """2.x toolkits pass the handler their context: the body is the one-line JSON. The EIA images' toolkit
    (sagemaker-inference 1.5.11) passes none: the handler raises its error class, whose status the toolkit
    keeps, and the body is that JSON line followed by the toolkit's traceback."""
    result = driven(run_name)
    bad = {bad.name: bad for bad in bad_requests(_limits(result.case))}[bad_name]
    answer = result.answers[bad.name]
    first_line, _, rest = answer.text.partition("\n")
    assert answer.status == bad.status, answer.text[:2000]
    error = json.loads(first_line)
    assert sorted(error) == ["error", "status"] and error["status"] == bad.status, error
    assert bad.message in error["error"], error
    assert answer.phrase == error["error"]  # the HTTP reason phrase: the message, one line
    if result.case.runtime.model_server == "mms":
        assert rest.startswith("Traceback (most recent call last):") and "GenericInferenceToolkitError" in rest
    else:
        assert rest == "" and answer.content_type == JSON_TYPE


@pytest.mark.parametrize("case", MATRIX, ids=lambda case: case.request.name[len("matrix "):])
@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_content_type_by_accept_matrix_through_the_toolkit(driven, run_name, case):
    """Every request format x every kind of Accept: the answer's status and type, and a body of that type."""
    answer = driven(run_name).answers[case.request.name]
    assert answer.status == case.status, answer.text[:1000]
    if case.status == 200:
        assert answer.content_type == case.content_type
        if case.content_type == NPY_TYPE:
            assert answer.array().shape == (1, 10)
        else:
            assert answer.json()["shape"] == [1, 10]
    else:  # the one-line JSON error (the EIA toolkits append their traceback, and set no Content-Type on errors)
        error = json.loads(answer.text.partition("\n")[0])
        assert error["status"] == 406 and "unsupported Accept 'text/html'" in error["error"]


@pytest.mark.parametrize("run_name", MATRIX_RUNS)
def test_a_missing_content_type_is_a_415(driven, run_name):
    answer = driven(run_name).answers[MISSING_CONTENT_TYPE.name]
    assert answer.status == 415 and "missing Content-Type" in json.loads(answer.text.split("\n")[0])["error"]


@pytest.mark.parametrize("run_name", ["eia-1.5.1 accelerator=false", "eia-1.3.1 accelerator=false"])
def test_the_request_size_limit_is_read_from_the_container_environment(driven, run_name):
    """INFERENCE_MAX_REQUEST_BYTES lowered in the container environment: the handler enforces that limit."""
    result = driven(run_name)
    under, over = (result.answers[r.name] for r in LIMIT_REQUESTS)
    np.testing.assert_allclose(under.array(), result.reference(LIMIT_REQUESTS[0].name), rtol=1e-5, atol=1e-5)
    assert over.status == 413 and f"over the limit of {LOWERED_LIMIT} (serving.limits.max_request_bytes" in over.text


def test_the_serving_cases_limits_differ_from_every_default(serving_case):
    """So that the bad-request matrix proves the configured limits reach the handler, not its defaults."""
    configured = limits_of(serving_case("eia-1.5.1").container_environment())
    assert configured == SERVING_TEST_LIMITS
    assert all(configured[key] != DEFAULT_LIMITS[key] for key in DEFAULT_LIMITS)


def test_the_shipped_size_limit_is_the_container_environments():
    from config import load_config
    from config.container import container_environment

    deployment = next(d for d in load_config(REPO / "config").environment("prod").models if d.name == "image-classifier")
    env = container_environment(deployment)
    assert int(env["INFERENCE_MAX_REQUEST_BYTES"]) == 6 * 1024 * 1024  # SageMaker's real-time payload limit
    assert int(env["TS_MAX_REQUEST_SIZE"]) > int(env["INFERENCE_MAX_REQUEST_BYTES"])
    assert int(env["MMS_MAX_REQUEST_SIZE"]) > int(env["INFERENCE_MAX_REQUEST_BYTES"])


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("run_name", ["eia-1.5.1 no accelerator", "eia-1.3.1 no accelerator", "cpu"])
def test_images_are_resized_on_the_short_side_then_center_cropped(driven, run_name, scale):
    """146x73 (short side 73, the default for a 64 crop): the crop keeps columns 41..104, half red, half blue.
    Run with each runtime's Pillow (8.2, 7.2, and 2.6.0's)."""
    chw = _preprocessed(driven(run_name), f"scale {scale}")
    red, _, blue = chw * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    assert chw.shape == (3, 64, 64) and chw.dtype == np.float32
    assert red[:, :31].min() > 0.99 and red[:, 33:].max() < 0.01
    assert blue[:, :31].max() < 0.01 and blue[:, 33:].min() > 0.99


def _preprocessed(result: DriverResult, name: str) -> np.ndarray:
    return _from_b64(result.document["preprocessed"][name]["chw"])


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
@pytest.mark.parametrize("run_name", ["eia-1.5.1 no accelerator", "eia-1.3.1 no accelerator", "cpu"])
def test_images_are_turned_upright_by_their_exif_orientation(driven, run_name, orientation):
    """Each image is the geometry image stored transposed: shown upright, red is on the left, blue on the right
    (JPEG blurs the edge between them, so the bounds are looser than the PNG test's)."""
    chw = _preprocessed(driven(run_name), f"orientation {orientation}")
    red, _, blue = chw * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    assert red[:, :28].min() > 0.9 and red[:, 36:].max() < 0.1, (orientation, red.mean(axis=0).round(1))
    assert blue[:, :28].max() < 0.1 and blue[:, 36:].min() > 0.9, (orientation, blue.mean(axis=0).round(1))


@pytest.mark.parametrize("run_name", ["eia-1.5.1 no accelerator", "eia-1.3.1 no accelerator", "cpu"])
def test_a_large_jpeg_is_decoded_at_reduced_scale_and_only_its_crop_resized(driven, run_name):
    """1600x1200 with short 80: Pillow's draft decodes it at 1/8 (200x150, both sides still >= 80) instead of
    1.9 million pixels. The reference decodes it whole and resizes the same centered crop box (at 15x the
    size): they differ by JPEG's reduced-scale decoding only, at most a few levels of 255."""
    from PIL import Image

    item = driven(run_name).document["preprocessed"]["large jpeg"]
    assert item["decoded_size"] == [200, 150]
    full = Image.open(io.BytesIO(PREPROCESS_IMAGES["large jpeg"][0])).convert("RGB")
    box = 64 * min(full.size) / LARGE_JPEG_SHORT  # the crop, in the full image's pixels
    left, top = (full.size[0] - box) / 2, (full.size[1] - box) / 2
    reference = np.asarray(full.resize((64, 64), Image.BILINEAR, box=(left, top, left + box, top + box)), np.float32) / 255
    served = _from_b64(item["chw"]) * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    error = np.abs(served.transpose(1, 2, 0) - reference)
    assert error.mean() < 0.005 and error.max() < 0.05, (error.mean(), error.max())


# ------------------------------------------------------------------------------------ runtimes, model_fn, accelerator


def _pins(requirements):
    """runtimes/<name>.txt -> {normalized name: version}."""
    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    return {name.strip().lower().replace("_", "-"): version.strip() for name, _, version in
            (line.partition("==") for line in lines if "==" in line)}


@pytest.mark.parametrize("run_name", list(RUNS))
def test_each_run_is_the_runtimes_own_python_torch_and_toolkit(driven, run_name):
    result = driven(run_name)
    versions, runtime = result.document["versions"], result.case.runtime
    assert versions["python"] == runtime.python_version
    assert versions["torch"].split("+")[0] == runtime.framework_version
    pins = _pins(runtime.requirements)
    assert versions["toolkit"] == {name: pins[name] for name in versions["toolkit"]}
    assert versions["handler"].startswith(str(result.case.model_dir / "code"))  # the packaged copy, not inference_src/


@pytest.mark.parametrize("run_name", list(RUNS))
def test_model_fn_runs_one_warm_up_forward(driven, run_name):
    """No graph had run in the driver before initialize; after it, the JIT's last graph is the model's (an
    AOTInductor package runs none: it was called once, at the recorded input shape)."""
    result = driven(run_name)
    assert result.document["ran_a_graph_before_model_fn"] is False
    if RUNS[run_name].case == "cpu-aoti":
        assert result.document["package_calls_in_model_fn"] == [list(INPUT_SHAPE)]
        return
    graph = result.document["graph_run_by_model_fn"]
    assert graph is not None and "conv" in graph


def test_eia_1_5_1_attaches_the_accelerator_and_runs_every_forward_on_it(driven):
    """EI developer guide recipe: profiling executor off, attach_eia(model, 0) once, forward under
    no_grad + optimized_execution(True); the warm-up is the first forward, at the recorded input shape."""
    result = driven("eia-1.5.1 accelerator")
    at_load = result.document["eia_after_model_fn"]
    assert at_load["torcheia_imported"] is True
    assert at_load["attach_calls"] == [{"module": "RecursiveScriptModule", "device_ordinal": 0, "training": False}]
    assert at_load["profiling_executor"] is False
    assert at_load["forwards"] == [{"grad_enabled": False, "optimize": True, "input_shape": list(INPUT_SHAPE)}]
    after = result.eia
    assert after["attach_calls"] == at_load["attach_calls"]  # once, at load: not per request
    assert len(after["forwards"]) == 1 + result.forwards
    assert all(f["grad_enabled"] is False and f["optimize"] is True for f in after["forwards"])
    assert result.document["model"]["module_type"] == "AttachedModule" and result.document["model"]["device"] == "cpu"


def test_eia_1_3_1_runs_every_forward_with_the_eia_target(driven):
    """The seed's torch_eia 1.3.1 form: optimized_execution(True, {"target_device": "eia:0"}) around each
    forward, the warm-up included; no torcheia (1.5.1 only) and no profiling-executor call (torch 1.3 has none)."""
    result = driven("eia-1.3.1 accelerator")
    eia_call = {"should_optimize": True, "options": {"target_device": "eia:0"}}
    at_load = result.document["eia_after_model_fn"]
    assert at_load["optimized_execution_calls"] == [eia_call]
    assert at_load["torcheia_imported"] is False and at_load["profiling_executor"] is None
    assert result.eia["optimized_execution_calls"] == [eia_call] * (1 + result.forwards)
    assert result.eia["torcheia_imported"] is False


@pytest.mark.parametrize("run_name", EIA_RUNS_WITHOUT_ACCELERATOR)
def test_without_an_accelerator_the_eia_path_is_never_taken(driven, run_name):
    """Variable unset or "false", stand-ins importable: torcheia is not imported, no EIA target, the
    profiling executor keeps its default, the model runs on the CPU."""
    result = driven(run_name)
    assert result.forwards > 0
    for record in (result.document["eia_after_model_fn"], result.eia):
        assert record["torcheia_imported"] is False and record["attach_calls"] == [] and record["forwards"] == []
        if run_name.startswith("eia-1.3.1"):
            assert record["optimized_execution_calls"] == []  # the shim was installed and never called
        else:
            assert record["profiling_executor"] is True
    assert result.document["model"]["device"] == "cpu" and result.document["model"]["module_type"].endswith("ScriptModule")  # not attached


def test_an_optimized_artifact_is_tuned_for_the_serving_cpu_when_loaded(driven):
    """The build froze it; model_fn applies optimize_for_inference (MKLDNN), which cannot be saved."""
    result = driven("cpu")
    assert result.document["model"]["info"]["recipe"] == "optimized"
    assert "mkldnn" in result.document["model"]["graph"]
    np.testing.assert_allclose(result.answers["npy batch -> npy"].array(), result.reference("npy batch -> npy"), rtol=1e-5, atol=1e-5)


def test_an_aoti_artifact_is_served_from_its_compiled_package(driven):
    """Recipe aoti ships model.pt2 (torch.export + AOTInductor) and model_info.json instead of model.pt: model_fn
    loads the package with the runtime's own torch 2.6, and its logits are the package's own, at every batch size
    (the batch dimension was exported dynamic)."""
    result = driven("cpu aoti")
    assert result.document["model"]["module_type"] == "AOTICompiledModel"
    assert result.document["model"]["info"]["recipe"] == "aoti" and result.document["model"]["info"]["input_shape"] == list(INPUT_SHAPE)
    for name in ("npy batch -> npy", "npy chw -> npy"):
        np.testing.assert_allclose(result.answers[name].array(), result.reference(name), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ the source itself


def _vermin(path):
    vermin = str(REPO / ".venv" / "bin" / "vermin") if (REPO / ".venv" / "bin" / "vermin").exists() else "vermin"
    return subprocess.run([vermin, "-t=3.6-", "--no-tips", "--violations", str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("source", ["inference.py", "request_handling.py"])
def test_handler_is_valid_python_3_6(tmp_path, source):
    """The EIA images run Python 3.6; vermin fails on anything newer (the driver runs the handler there too)."""
    newer = tmp_path / "newer.py"
    newer.write_text("if (n := 3) > 2:\n    print(n)\n")  # 3.8 syntax: proves the check bites
    assert _vermin(newer).returncode != 0
    result = _vermin(REPO / "inference_src" / source)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stand_ins_never_ship(serving_case):
    code = serving_case("eia-1.5.1").model_dir / "code"
    assert sorted(p.name for p in code.iterdir()) == ["inference.py", "request_handling.py", "requirements.txt"]


def test_each_gpu_worker_takes_the_gpu_its_model_server_assigned(monkeypatch):
    """One worker per GPU (config/workers.py): TorchServe's context names each worker's GPU; without a context, GPU 0."""
    from types import SimpleNamespace

    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(REPO / "inference_src"))  # as the toolkit puts code/ on sys.path
    import inference_src.inference as handler

    assert handler._gpu_id(SimpleNamespace(system_properties={"gpu_id": 3})) == 3
    assert handler._gpu_id(SimpleNamespace(system_properties={"gpu_id": None})) == 0
    assert handler._gpu_id(None) == 0
