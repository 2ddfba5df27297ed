"""The MXNet SSD detector: its export (model_artifacts/mxnet_export.py) and its handler (inference_src/mxnet_ssd).

MXNet needs numpy<1.24, so everything MXNet runs in .venv-mxnet (`make setup-mxnet`) subprocesses: a driver
(DRIVER below) loads the exported model and answers a batch of requests through the real SageMaker MXNet
toolkit (sagemaker-mxnet-inference's HandlerService with a multi-model-server Context, as in the MXNet
serving containers; the Java model server itself is never started), or calls the handler's functions.
"""
import ast
import base64
import io
import json
import shutil
import subprocess
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

MXNET_PYTHON = REPO / ".venv-mxnet" / "bin" / "python"
HANDLER = REPO / "inference_src" / "mxnet_ssd" / "inference.py"
EXPORTER = REPO / "model_artifacts" / "mxnet_export.py"
MODEL = "ssd_512_mobilenet1.0_coco"
DETECTIONS = 100


# Runs in .venv-mxnet: argv = model_dir, mode, requests (JSON file); prints one JSON document.
DRIVER = textwrap.dedent('''
    import base64, json, os, sys, types
    model_dir, mode, requests_file = sys.argv[1:4]
    requests = json.load(open(requests_file))
    sys.path.insert(0, os.path.join(model_dir, "code"))
    os.environ["SAGEMAKER_PROGRAM"] = "inference.py"
    import mxnet as mx

    def body_of(request):
        return base64.b64decode(request["body_b64"]) if "body_b64" in request else request.get("body", "").encode("utf-8")

    def headers_of(request):
        headers = {}
        if request.get("content_type"):
            headers["Content-Type"] = request["content_type"]
        if request.get("accept"):
            headers["Accept"] = request["accept"]
        return headers

    def text(answer):
        return answer.decode("utf-8") if isinstance(answer, bytes) else answer

    def toolkit():
        """The MXNet serving containers' path: HandlerService.initialize, then handle per request."""
        from mms.context import Context, RequestProcessor
        from sagemaker_mxnet_serving_container.handler_service import HandlerService

        service = HandlerService()
        context = Context("model", model_dir, {"model": {}}, 1, None, "1.1.11")
        context.request_processor = [RequestProcessor({})]
        service.initialize(context)
        results = []
        for request in requests:
            context.request_processor = [RequestProcessor(headers_of(request))]
            answer = service.handle([{"body": body_of(request)}], context)[0]
            results.append({"status": context.get_response_status(0)[0], "body": text(answer),
                            "content_type": context.get_response_content_type(0)})
        return results

    class RecordingContext(object):
        def __init__(self):
            self.status = 200
        def set_response_status(self, code=200, phrase="", idx=0):
            self.status = code

    def functions(with_context):
        """input_fn/predict_fn/output_fn called directly, with a context or (older toolkits) without."""
        import inference
        model = inference.model_fn(model_dir)
        results = []
        for request in requests:
            context = RecordingContext() if with_context else None
            args = (context,) if with_context else ()
            try:
                body = body_of(request)  # the toolkit decodes UTF-8 content types to str
                body = body.decode("utf-8") if request.get("content_type") == "application/json" else body
                data = inference.input_fn(body, request.get("content_type"), *args)
                body, content_type = inference.output_fn(inference.predict_fn(data, model, *args), request.get("accept"), *args)
                results.append({"status": context.status if context else 200, "body": text(body), "content_type": content_type})
            except Exception as error:
                results.append({"raised": type(error).__name__, "status": getattr(error, "status_code", None),
                                "body": getattr(error, "message", str(error)), "phrase": getattr(error, "phrase", None)})
        return results

    def reference():
        """Per image: the handler's input tensor against gluoncv's transform_test, and a plain forward of it."""
        import numpy as np
        import inference
        from gluoncv.data.transforms.presets.ssd import transform_test

        net = mx.gluon.SymbolBlock.imports(os.path.join(model_dir, "model-symbol.json"), ["data"],
                                           os.path.join(model_dir, "model-0000.params"), ctx=mx.cpu())
        results = []
        for request in requests:
            data = base64.b64decode(request["image_b64"])
            tensor = inference.preprocess(inference.decode_image(data), request["short"])
            expected, _ = transform_test(mx.image.imdecode(data), short=request["short"])
            cid, score, bbox = net(tensor)
            results.append({"shape": list(tensor.shape), "gluoncv_shape": list(expected.shape),
                            "max_abs_diff_to_gluoncv": float(np.abs(tensor.asnumpy() - expected.asnumpy()).max()),
                            "cid": cid[0].asnumpy().tolist(), "score": score[0].asnumpy().tolist(), "bbox": bbox[0].asnumpy().tolist()})
        return results

    def accelerator():
        """model_fn's choice of context and hybridize options under the EIA convention, with fake EIA runtimes."""
        import inference
        calls = []
        original = mx.gluon.SymbolBlock.hybridize
        mx.gluon.SymbolBlock.hybridize = lambda self, *args, **kwargs: calls.append(kwargs)
        results = {}
        os.environ["SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"] = "true"
        mx.eia = lambda: mx.cpu(0)  # MXNet 1.4.1 / 1.5.1 EIA builds
        inference.model_fn(model_dir)
        results["mx.eia"] = {"context": str(inference.model_context()), "hybridize": calls.pop()}
        del mx.eia
        sys.modules["eimx"] = types.ModuleType("eimx")  # MXNet 1.7.0 EIA: the eimx plugin
        inference.model_fn(model_dir)
        results["eimx"] = {"context": str(inference.model_context()), "hybridize": calls.pop()}
        sys.modules["eimx"] = None
        inference.model_fn(model_dir)
        results["no EIA runtime"] = {"context": str(inference.model_context()), "hybridize": calls.pop()}
        os.environ["SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"] = "false"
        inference.model_fn(model_dir)
        results["no accelerator"] = {"context": str(inference.model_context()), "hybridize": calls.pop()}
        mx.gluon.SymbolBlock.hybridize = original
        return results

    def nonfinite():
        """output_fn on a prediction with inf and NaN in it: those rows become empty rows."""
        import numpy as np
        import inference
        cid, score, bbox = np.zeros((3, 1), "float32"), np.full((3, 1), 0.5, "float32"), np.ones((3, 4), "float32")
        bbox[1, 2], score[2, 0] = np.inf, np.nan
        return inference.output_fn(((1, 3, 64, 64), cid, score, bbox), "application/json")[0]

    modes = {"toolkit": toolkit, "nonfinite": nonfinite, "functions": lambda: functions(True), "functions-no-context": lambda: functions(False),
             "reference": reference, "accelerator": accelerator}
    print("DRIVER-RESULT " + json.dumps(modes[mode]()))
''')


def run_mxnet(*args, timeout=300):
    process = subprocess.run([str(MXNET_PYTHON), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return process


def drive(model_dir, mode, requests, tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / f"{mode}.json").write_text(json.dumps(requests))
    output = run_mxnet(tmp_path / "driver.py", model_dir, mode, tmp_path / f"{mode}.json").stdout
    return json.loads(output.split("DRIVER-RESULT ", 1)[1])


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def export(out, *extra):
    return run_mxnet("-m", "model_artifacts.mxnet_export", "--model", MODEL, "--out", out, *extra)


# ------------------------------------------------------------------------------------ images and requests


def image_bytes(width, height, image_format):
    """A smooth picture with some noise: compresses like a photo, the same bytes every time."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    pixels = np.clip(pixels + np.random.RandomState(0).randint(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def b64(data):
    return base64.b64encode(data).decode("ascii")


def json_request(document, content_type="application/json", accept=None):
    return {"body": json.dumps(document), "content_type": content_type, "accept": accept}


def expected_shape(width, height, short, max_size=1024):
    """[1, 3, H, W] by gluoncv's resize_short_within: short side to `short`, long side at most max_size."""
    scale = short / min(width, height)
    if round(scale * max(width, height)) > max_size:
        scale = max_size / max(width, height)
    return [1, 3, int(round(height * scale)), int(round(width * scale))]


JPEG = image_bytes(640, 480, "JPEG")
PNG = image_bytes(300, 500, "PNG")
WIDE = image_bytes(1000, 200, "JPEG")
# (name, image bytes, width, height, request document): the source document's contract.
GOOD = [
    ("jpeg, short 224 (the source document's)", JPEG, 640, 480, {"image": b64(JPEG), "short": 224}),
    ("png, default short 512", PNG, 300, 500, {"image": b64(PNG)}),
    ("wide jpeg, long side capped at 1024", WIDE, 1000, 200, {"image": b64(WIDE), "short": 512}),
]


def _gif():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


def _png_header(width, height):
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"


# (name, request, expected status)
BAD = [
    ("raw JPEG body", {"body_b64": b64(JPEG), "content_type": "image/jpeg"}, 415),
    ("no Content-Type", {"body": json.dumps({"image": b64(JPEG)})}, 415),
    ("CSV", {"body": "1,2,3", "content_type": "text/csv"}, 415),
    ("empty body", {"body": "", "content_type": "application/json"}, 400),
    ("not JSON", {"body": "{image:", "content_type": "application/json"}, 400),
    ("JSON list", json_request([b64(JPEG)]), 400),
    ("unknown key", json_request({"image": b64(JPEG), "size": 224}), 400),
    ("missing image", json_request({"short": 224}), 400),
    ("image not a string", json_request({"image": 123}), 400),
    ("bad base64", json_request({"image": "not base64!"}), 400),
    ("not an image", json_request({"image": b64(b"hello, world")}), 400),
    ("GIF", json_request({"image": b64(_gif())}), 400),
    ("truncated PNG", json_request({"image": b64(PNG[: len(PNG) // 2])}), 400),
    ("JPEG without frame header", json_request({"image": b64(b"\xff\xd8\xff\xe0\x00\x04ab")}), 400),
    ("decompression bomb", json_request({"image": b64(_png_header(20000, 20000))}), 413),
    ("short too small", json_request({"image": b64(JPEG), "short": 8}), 400),
    ("short too large", json_request({"image": b64(JPEG), "short": 5000}), 400),
    ("short a string", json_request({"image": b64(JPEG), "short": "224"}), 400),
    ("short a float", json_request({"image": b64(JPEG), "short": 224.0}), 400),
    ("short a boolean", json_request({"image": b64(JPEG), "short": True}), 400),
    ("Accept CSV", json_request({"image": b64(JPEG), "short": 224}, accept="text/csv"), 406),
]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The export, laid out as SageMaker extracts model.tar.gz: model files + code/inference.py."""
    if not MXNET_PYTHON.exists():
        pytest.skip(".venv-mxnet is missing: run `make setup-mxnet` (MXNet needs numpy<1.24, so it has its own venv)")
    model_dir = tmp_path_factory.mktemp("opt-ml-model")
    export(model_dir)
    (model_dir / "code").mkdir()
    shutil.copy(HANDLER, model_dir / "code" / "inference.py")
    return model_dir


@pytest.fixture(scope="module")
def toolkit_answers(exported, tmp_path_factory):
    """Every request of GOOD and BAD, in that order, then the first good one again, through the toolkit."""
    requests = [json_request(document) for _, _, _, _, document in GOOD] + [request for _, request, _ in BAD]
    requests.append(json_request(GOOD[0][4], accept="application/json"))
    answers = drive(exported, "toolkit", requests, tmp_path_factory.mktemp("driver"))
    return answers[: len(GOOD)], answers[len(GOOD): -1], answers[-1]


@pytest.fixture(scope="module")
def references(exported, tmp_path_factory):
    requests = [{"image_b64": b64(data), "short": document.get("short", 512)} for _, data, _, _, document in GOOD]
    return drive(exported, "reference", requests, tmp_path_factory.mktemp("driver"))


# ------------------------------------------------------------------------------------ export


@pytest.mark.slow
def test_export_writes_the_toolkit_file_names_and_records_what_it_built(exported):
    assert (exported / "model-symbol.json").is_file() and (exported / "model-0000.params").is_file()
    info = json.loads((exported / "export.json").read_text())
    assert info["model"] == MODEL and info["mxnet_version"] == "1.9.1"
    assert info["input"]["short_default"] == 512 and info["classes"] == 80 == len(info["class_names"])
    assert info["output_shapes"] == {"cid": [1, DETECTIONS, 1], "score": [1, DETECTIONS, 1], "bbox": [1, DETECTIONS, 4]}
    assert info["weights"]["source"] == "random" and info["weights"]["seed"] == 0
    # MXNet 1.4.1 and 1.5.1 (EIA runtimes) have no _contrib_box_decode: the export decodes boxes without it.
    assert "_contrib_box_decode" not in info["operators"] and "_contrib_box_nms" in info["operators"]


@pytest.mark.slow
def test_two_exports_are_byte_identical(exported, tmp_path):
    export(tmp_path)
    for name in ("model-symbol.json", "model-0000.params", "export.json"):
        assert (tmp_path / name).read_bytes() == (exported / name).read_bytes(), name
    assert b" object at 0x" not in (tmp_path / "model-symbol.json").read_bytes()


@pytest.mark.slow
def test_export_loads_user_weights_and_refuses_files_that_do_not_fit(exported, tmp_path):
    weights = tmp_path / "weights.params"
    script = (  # weights as a user saves them: net.save_parameters, here of another random draw
        "import mxnet as mx; from gluoncv import model_zoo; from model_artifacts.mxnet_export import _initialize; "
        f"mx.random.seed(7); net = model_zoo.get_model({MODEL!r}, pretrained=False, pretrained_base=False); "
        "_initialize(mx, net); net(mx.nd.zeros((1, 3, 64, 64))); net.save_parameters(%r)" % str(weights)
    )
    run_mxnet("-c", script)
    export(tmp_path / "out", "--weights", weights)
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["weights"]["source"] == "file" and info["weights"]["file"] == "weights.params"
    assert (tmp_path / "out" / "model-0000.params").read_bytes() != (exported / "model-0000.params").read_bytes()

    wrong = tmp_path / "wrong.params"
    run_mxnet("-c", "import mxnet as mx; mx.nd.save(%r, {'w': mx.nd.zeros((2,))})" % str(wrong))
    process = subprocess.run([str(MXNET_PYTHON), "-m", "model_artifacts.mxnet_export", "--model", MODEL, "--out", tmp_path / "bad",
                              "--weights", wrong], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode != 0 and "not ssd_512_mobilenet1.0_coco parameters" in process.stderr


def test_the_exporter_never_imports_torch_or_the_main_stack():
    modules = _imported_modules(EXPORTER)
    assert not {"torch", "torchvision", "aws_cdk", "config", "stacks"} & {name.split(".")[0] for name in modules}, modules


# ------------------------------------------------------------------------------------ handler: good requests


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(GOOD)), ids=[name for name, *_ in GOOD])
def test_answers_the_source_documents_contract(toolkit_answers, index):
    _, _, width, height, document = GOOD[index]
    answer = toolkit_answers[0][index]
    assert answer["status"] == 200 and answer["content_type"] == "application/json", answer
    body = strict_json(answer["body"])
    assert sorted(body) == ["bbox", "cid", "score", "shape"]
    assert body["shape"] == expected_shape(width, height, document.get("short", 512))
    assert np.asarray(body["cid"]).shape == (DETECTIONS, 1) and np.asarray(body["score"]).shape == (DETECTIONS, 1)
    assert np.asarray(body["bbox"]).shape == (DETECTIONS, 4)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(GOOD)), ids=[name for name, *_ in GOOD])
def test_answers_what_the_exported_network_answers_for_the_same_input(toolkit_answers, references, index):
    body, reference = json.loads(toolkit_answers[0][index]["body"]), references[index]
    assert body["shape"] == reference["shape"]
    for key in ("cid", "score", "bbox"):
        np.testing.assert_allclose(body[key], reference[key], rtol=1e-5, atol=1e-4, err_msg=key)


@pytest.mark.slow
def test_preprocessing_equals_gluoncvs_ssd_transform_test(references):
    for reference in references:
        assert reference["shape"] == reference["gluoncv_shape"]
        assert reference["max_abs_diff_to_gluoncv"] == 0.0, reference["max_abs_diff_to_gluoncv"]


@pytest.mark.slow
def test_the_worker_keeps_serving_after_bad_requests(toolkit_answers):
    first, last = toolkit_answers[0][0], toolkit_answers[2]
    assert last["status"] == 200 and last["body"] == first["body"]


# ------------------------------------------------------------------------------------ handler: bad requests


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BAD)), ids=[name for name, *_ in BAD])
def test_bad_requests_get_their_status_and_a_one_line_json_error(toolkit_answers, index):
    _, _, status = BAD[index]
    answer = toolkit_answers[1][index]
    assert answer["status"] == status, answer
    assert "Traceback" not in answer["body"] and "\n" not in answer["body"].strip(), answer["body"]
    error = json.loads(answer["body"])
    assert error["status"] == status and isinstance(error["error"], str) and error["error"], error


@pytest.mark.slow
def test_functions_called_directly_answer_through_the_context_or_the_toolkits_error_class(exported, tmp_path):
    requests = [request for _, request, _ in BAD[:4]] + [json_request(GOOD[0][4])]
    statuses = [status for _, _, status in BAD[:4]] + [200]
    with_context = drive(exported, "functions", requests, tmp_path)
    assert [answer["status"] for answer in with_context] == statuses
    assert all("raised" not in answer for answer in with_context)
    assert json.loads(with_context[-1]["body"])["shape"] == [1, 3, 224, 299]

    # Toolkits that pass no context (the 1.4.1 EIA image's sagemaker-inference 1.1.0): the toolkit's error
    # class carries the status and, as its message (the body those toolkits send), the one-line JSON.
    without_context = drive(exported, "functions-no-context", requests[:-1], tmp_path)
    for answer, status in zip(without_context, statuses):
        assert answer["raised"] == "GenericInferenceToolkitError" and answer["status"] == status, answer
        assert json.loads(answer["body"])["status"] == status and "\n" not in answer["phrase"]


@pytest.mark.slow
def test_non_finite_detections_become_empty_rows_so_the_body_stays_strict_json(exported, tmp_path):
    body = strict_json(drive(exported, "nonfinite", [], tmp_path))
    assert body["shape"] == [1, 3, 64, 64]
    assert body["cid"] == [[0.0], [-1.0], [-1.0]] and body["score"] == [[0.5], [-1.0], [-1.0]]
    assert body["bbox"] == [[1.0] * 4, [-1.0] * 4, [-1.0] * 4]


@pytest.mark.slow
def test_model_fn_uses_the_elastic_inference_accelerator_when_the_container_says_one_is_attached(exported, tmp_path):
    choices = drive(exported, "accelerator", [], tmp_path)
    static = {"static_alloc": True, "static_shape": True}
    assert choices["mx.eia"] == {"context": "cpu(0)", "hybridize": static}  # the fake mx.eia() returns cpu(0)
    assert choices["eimx"] == {"context": "cpu(0)", "hybridize": {"backend": "EIA", **static}}
    assert choices["no EIA runtime"] == choices["no accelerator"] == {"context": "cpu(0)", "hybridize": static}


# ------------------------------------------------------------------------------------ handler: source


def test_handler_is_python_3_6_valid():
    """The MXNet EIA images (1.4.1, 1.5.1, 1.7.0) run Python 3.6."""
    from tests.test_handler import _vermin

    result = _vermin(HANDLER)
    assert result.returncode == 0, result.stdout + result.stderr


def test_handler_imports_only_what_every_mxnet_serving_image_has():
    modules = {name.split(".")[0] for name in _imported_modules(HANDLER)}
    assert modules <= {"base64", "binascii", "json", "logging", "os", "struct", "mxnet", "numpy", "sagemaker_inference", "eimx"}, modules
    assert "gluoncv" not in modules and "subprocess" not in modules


def _imported_modules(path):
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
    return modules
