"""The MXNet SSD detector on the runtimes that serve it: its export and its handler (inference_src/mxnet_ssd).

Three environments, none of them this one (MXNet needs numpy<1.24):
- .venv-mxnet, the build venv (`make setup-mxnet`): GluonCV builds the graph (model_artifacts/mxnet_export.py);
  the gluoncv reference checks run there too.
- .venv-runtimes/eia-mxnet-1.4.1 (mxnet-inference-eia:1.4.1: Python 3.6, MXNet 1.4.1, mxnet-model-server 1.0.5,
  sagemaker-inference 1.1.0, sagemaker-mxnet-inference 1.2.3, whose toolkit calls handler functions with two
  arguments) and .venv-runtimes/mxnet-1.9.0 (the gpu/cpu/serverless images: Python 3.8, MXNet 1.9.0,
  multi-model-server 1.1.8, sagemaker-mxnet-inference 1.5.5, sagemaker-inference 1.10.1), built by
  `python -m runtimes setup NAME`. Each converts the graph with its own MXNet (model_artifacts/mxnet_runtime_export.py)
  and serves it: DRIVER below, run by the runtime's Python, does what the image does, in process, without Java.
  It lays the model out as the toolkit does for its model server (sagemaker-inference 1.1.0 runs model-archiver;
  1.10.1 hands the model directory over as is), loads it with the model server's own Python loader
  (mms.model_loader, which instantiates the toolkit's HandlerService and calls initialize), and sends each
  request as the Java frontend encodes it (the worker protocol, decoded by mms.protocol.otf_message_handler),
  through mms.service.Service.predict, decoding the answer the worker would send back: status, reason phrase,
  content type and body.
A missing venv fails these tests with the command that builds it; nothing is skipped.
"""
import ast
import base64
import io
import json
import os
import shutil
import subprocess
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from inference_src.request_handling import LIMITS as REQUEST_LIMITS
from local_serving.client import npy
from model_artifacts.build import MXNET_PYTHON  # .venv-mxnet, or $MXNET_PYTHON
from model_artifacts.manifest import handler_code
from tests.conftest import REPO
from tests.payloads import SERVING_TEST_LIMITS, BadRequest

HANDLER = REPO / "inference_src" / "mxnet_ssd" / "inference.py"
EXPORTER = REPO / "model_artifacts" / "mxnet_export.py"
RUNTIME_EXPORTER = REPO / "model_artifacts" / "mxnet_runtime_export.py"
MODEL = "ssd_512_mobilenet1.0_coco"
DETECTIONS = 100
EIA_RUNTIME, RUNTIME_190 = "eia-mxnet-1.4.1", "mxnet-1.9.0"
RUNTIMES = (EIA_RUNTIME, RUNTIME_190)
# How each image hands the model to its model server, and what it has. The EIA image's MXNet (amazonei_mxnet)
# always has mx.eia(); the driver maps it to the CPU, as device 7 so that the test sees which context was chosen.
SERVING = {
    EIA_RUNTIME: {"layout": "model-archiver", "eia_standin": True, "toolkit": "sagemaker-mxnet-inference 1.2.3 / sagemaker-inference 1.1.0"},
    RUNTIME_190: {"layout": "model-dir", "eia_standin": False, "toolkit": "sagemaker-mxnet-inference 1.5.5 / sagemaker-inference 1.10.1"},
}
ACCELERATOR_CONTEXT, CPU_CONTEXT = "cpu(7)", "cpu(0)"


# Runs in a serving runtime's venv (Python 3.6 or 3.8): argv = spec file. Prints one JSON document.
DRIVER = textwrap.dedent('''
    import base64, functools, json, os, struct, sys, types
    spec = json.load(open(sys.argv[1]))
    import mxnet as mx

    eia_calls = []
    if spec["eia_standin"]:  # amazonei_mxnet's mx.eia(), mapped to the CPU (a test stand-in, never shipped)
        def eia(device_id=0):
            eia_calls.append(device_id)
            return mx.Context("cpu", 7)
        mx.eia = eia

    from sagemaker_inference import environment, model_server
    from sagemaker_mxnet_serving_container import serving
    from mms.model_loader import ModelLoaderFactory
    from mms.protocol import otf_message_handler
    from mms.service import Service
    assert environment.model_dir == spec["model_dir"], (environment.model_dir, spec["model_dir"])

    # The handler module, imported from the code directory the toolkit puts on the worker's PYTHONPATH; its
    # functions wrapped to record how the toolkit calls them (functools.wraps keeps the signature it inspects).
    sys.path.insert(0, environment.code_dir)
    import inference
    arities = {}
    def recording(name):
        original = getattr(inference, name)
        @functools.wraps(original)
        def call(*args):
            arities.setdefault(name, set()).add(len(args))
            return original(*args)
        return call
    for name in ("input_fn", "predict_fn", "output_fn"):
        setattr(inference, name, recording(name))

    def model_server_layout():
        """(model directory, handler) as the toolkit hands them to its model server."""
        if spec["layout"] == "model-archiver":  # sagemaker-inference 1.1.0: model-archiver --archive-format no-archive
            model_server._adapt_to_mms_format(serving.HANDLER_SERVICE)
            directory = os.path.join(model_server.DEFAULT_MMS_MODEL_DIRECTORY, model_server.DEFAULT_MMS_MODEL_NAME)
            with open(os.path.join(directory, "MAR-INF", "MANIFEST.json")) as stream:
                return directory, json.load(stream)["model"]["handler"]
        # sagemaker-inference 1.10.1: --models model=<model_dir>, the handler in the generated MMS config
        properties = model_server._generate_mms_config_properties(environment.Environment(), serving.HANDLER_SERVICE)
        handler = [line.split("=", 1)[1] for line in properties.splitlines() if line.startswith("default_service_handler=")][0]
        return environment.model_dir, handler

    class Connection(object):
        """The worker's socket, holding one message from the Java frontend."""
        def __init__(self, data):
            self.data = data
        def recv(self, size):
            chunk, self.data = self.data[:size], self.data[size:]
            return chunk

    def field(value):
        data = value.encode("utf-8") if value is not None else b""
        return struct.pack("!i", len(data)) + data

    def frame(request, request_id):
        """An /invocations request as MMS's Java frontend sends it to the worker (ModelRequestEncoder)."""
        body = base64.b64decode(request["body_b64"])
        headers = [(k, v) for k, v in (("Content-Type", request.get("content_type")), ("Accept", request.get("accept"))) if v is not None]
        mime = request["content_type"].split(";")[0].strip() if request.get("content_type") else None  # HttpUtil.getMimeType
        data = b"I" + field(request_id)
        for name, value in headers:
            data += field(name) + field(value)
        data += struct.pack("!i", -1) + field("body") + field(mime) + struct.pack("!i", len(body)) + body
        return data + struct.pack("!i", -1) + struct.pack("!i", -1)

    class Reader(object):
        def __init__(self, data):
            self.data, self.position = bytes(data), 0
        def integer(self):
            value = struct.unpack("!i", self.data[self.position:self.position + 4])[0]
            self.position += 4
            return value
        def raw(self, size):
            value = self.data[self.position:self.position + size]
            self.position += size
            return value
        def text(self):
            return self.raw(self.integer()).decode("utf-8")

    def answer(response):
        """The worker's reply (otf_message_handler.create_predict_response), as the frontend reads it."""
        reader = Reader(response)
        code, message = reader.integer(), reader.text()
        answers = []
        while True:
            size = reader.integer()
            if size == -1:
                break
            reader.raw(size)  # request id
            content_type, status, phrase = reader.text(), reader.integer(), reader.text()
            headers = dict((reader.text(), reader.text()) for _ in range(reader.integer()))
            body = reader.raw(reader.integer())
            answers.append({"worker_code": code, "worker_message": message, "status": status, "phrase": phrase,
                            "content_type": content_type, "headers": headers, "body": body.decode("utf-8", "replace")})
        return answers

    os.environ["MMS_DECODE_INPUT_REQUEST"] = "false"  # the toolkit's MMS config: decode_input_request=false
    directory, handler = model_server_layout()
    service = ModelLoaderFactory.get_model_loader(directory).load("model", directory, handler, None, 1)
    results = {"handler": handler, "answers": []}
    for index, request in enumerate(spec["requests"]):
        command, batch = otf_message_handler.retrieve_msg(Connection(frame(request, "request-{}".format(index))))
        results["answers"].extend(answer(service.predict(batch)))

    model = service._entry_point.__self__._service._model  # HandlerService -> Transformer -> model_fn's block
    results["model_contexts"] = sorted(set(str(c) for p in model.collect_params().values() for c in p.list_ctx()))
    results["hybridize_flags"] = dict(model._flags)  # what model_fn hybridized the served block with
    results["eia_calls"] = len(eia_calls)
    results["arities"] = dict((name, sorted(values)) for name, values in arities.items())
    results["mxnet"] = mx.__version__

    if spec.get("extras"):
        import numpy as np
        # output_fn on a prediction with inf and NaN in it: those rows become empty rows.
        cid, score, bbox = np.zeros((3, 1), "float32"), np.full((3, 1), 0.5, "float32"), np.ones((3, 4), "float32")
        bbox[1, 2], score[2, 0] = np.inf, np.nan
        results["nonfinite"] = inference.output_fn(((1, 3, 64, 64), cid, score, bbox), "application/json")[0]
    if spec.get("extras") and not spec["eia_standin"]:
        # model_fn's hybridize options under the EIA convention without mx.eia(): the eimx plugin (MXNet 1.7.0
        # EIA images), then neither (CPU, with a warning).
        calls = []
        mx.gluon.SymbolBlock.hybridize = lambda self, *args, **kwargs: calls.append(kwargs)
        os.environ["SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT"] = "true"
        sys.modules["eimx"] = types.ModuleType("eimx")
        inference.model_fn(environment.model_dir)
        results["eimx"] = {"context": str(inference.model_context()), "hybridize": calls.pop()}
        sys.modules["eimx"] = None
        inference.model_fn(environment.model_dir)
        results["no EIA runtime"] = {"context": str(inference.model_context()), "hybridize": calls.pop()}
    print("DRIVER-RESULT " + json.dumps(results))
''')


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


def request(body, content_type="application/json", accept=None):
    """One /invocations request: body (bytes, str or a JSON document), its Content-Type and Accept headers."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    data = body.encode("utf-8") if isinstance(body, str) else body
    return {"body_b64": b64(data), "content_type": content_type, "accept": accept}


def expected_shape(width, height, short, max_size=1024):
    """[1, 3, H, W] by gluoncv's resize_short_within: short side to `short`, long side at most max_size."""
    scale = short / min(width, height)
    if round(scale * max(width, height)) > max_size:
        scale = max_size / max(width, height)
    return [1, 3, int(round(height * scale)), int(round(width * scale))]


JPEG = image_bytes(640, 480, "JPEG")
PNG = image_bytes(300, 500, "PNG")
WIDE = image_bytes(1000, 200, "JPEG")
# (name, image bytes, width, height, request document, Accept): the source document's contract.
GOOD = [
    ("jpeg, short 224 (the source document's)", JPEG, 640, 480, {"image": b64(JPEG), "short": 224}, None),
    ("png, default short 512, Accept application/json", PNG, 300, 500, {"image": b64(PNG)}, "application/json"),
    ("wide jpeg, long side capped at 1024, Accept */*", WIDE, 1000, 200, {"image": b64(WIDE), "short": 512}, "*/*"),
    ("jpeg, base64 with line breaks, Accept list", JPEG, 640, 480,
     {"image": base64.encodebytes(JPEG).decode("ascii"), "short": 224}, "text/html, application/json;q=0.9"),
]


def _gif():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


def _png_header(width, height):
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"


# serving.limits of every run here (the driver's container environment, and the end-to-end test's configuration):
# all differ from the defaults, so a handler that ignored its configuration would answer the 413 rows differently.
# max_pixels_per_request is below max_image_pixels: the detector's one image is all its request decodes.
LIMITS = {**SERVING_TEST_LIMITS, "max_pixels_per_request": 20_000_000}
assert all(LIMITS[limit.key] != limit.default for limit in REQUEST_LIMITS)
LIMITS_ENV = {limit.env: str(LIMITS[limit.key]) for limit in REQUEST_LIMITS}


def _over(key):
    return f"over the limit of {LIMITS[key]} (serving.limits.{key}"


def bad(name, body, status, message, content_type="application/json", accept=None):
    """A BadRequest row; body: bytes, str or a JSON document."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return BadRequest(name, body.encode("utf-8") if isinstance(body, str) else body, content_type, status, message, accept)


def as_request(row):
    """A BadRequest row as the driver and the HTTP test send it."""
    return request(row.body, row.content_type, row.accept)


_image_pixels, _request_pixels = LIMITS["max_image_pixels"], LIMITS["max_pixels_per_request"]
_SQUARE = int(_image_pixels ** 0.5) + 1  # just over the per-image limit
_UNDER = (_request_pixels // 4000 + 1, 4000)  # over the request's limit, under the per-image one
assert _SQUARE ** 2 > _image_pixels and _image_pixels > _UNDER[0] * _UNDER[1] > _request_pixels
EXAMPLE = '{"image": "<base64 JPEG/PNG>", "short": N}'
# Each refused request: its status and a fragment of its one-line JSON error.
BAD = [
    bad("raw JPEG body", JPEG, 415, "unsupported content type 'image/jpeg'; send application/json with an image", "image/jpeg"),
    bad("no Content-Type", {"image": b64(JPEG)}, 415, "missing Content-Type; send application/json", None),
    bad("CSV", "1,2,3", 415, "unsupported content type 'text/csv'", "text/csv"),
    bad("empty body", b"", 400, f"empty request body; send {EXAMPLE} as application/json"),
    bad("not JSON", "{image:", 400, "body is not valid JSON: "),
    bad("JSON not UTF-8", b'{"image": "\xff\xfe"}', 400, "JSON body is not UTF-8 ("),
    bad("JSON in Latin-1, declared", '{"image": "caf\u00e9"}'.encode("latin-1"), 400, "JSON body is not UTF-8",
        "application/json; charset=latin-1"),
    bad("deeply nested JSON", "[" * 100000, 400, f"JSON body is nested too deeply; send {EXAMPLE}"),
    bad("a batch: JSON list of images (one image per request)", [b64(JPEG), b64(PNG)], 400, f"JSON body must be an object: {EXAMPLE}"),
    bad("unknown key", {"image": b64(JPEG), "size": 224}, 400, "unknown JSON key(s) ['size']; accepted keys: ['image', 'short']"),
    bad("missing image", {"short": 224}, 400, 'JSON body needs "image": the base64 of a JPEG or PNG file'),
    bad("image not a string", {"image": 123}, 400, '"image" must be a base64 string, got int'),
    bad("bad base64", {"image": "not base64!"}, 400, '"image" is not valid base64 ('),
    bad("not an image", {"image": b64(b"hello, world")}, 400, '"image" is not a JPEG or PNG file'),
    bad("GIF", {"image": b64(_gif())}, 400, '"image" is not a JPEG or PNG file'),
    bad("truncated PNG", {"image": b64(PNG[: len(PNG) // 2])}, 400, '"image" is a damaged PNG file that cannot be decoded'),
    bad("JPEG without frame header", {"image": b64(b"\xff\xd8\xff\xe0\x00\x04ab")}, 400, '"image" is a damaged JPEG file (no frame header)'),
    bad("decompression bomb", {"image": b64(_png_header(20000, 20000))}, 413, '"image" is 20000x20000 pixels, ' + _over("max_image_pixels")),
    bad("image over the pixel limit", {"image": b64(_png_header(_SQUARE, _SQUARE))}, 413,
        f'"image" is {_SQUARE}x{_SQUARE} pixels, ' + _over("max_image_pixels")),
    bad("image over the request's pixel limit", {"image": b64(_png_header(*_UNDER))}, 413,
        '"image" is {}x{} pixels, '.format(*_UNDER) + _over("max_pixels_per_request")),
    bad("body over the size limit", b" " * (LIMITS["max_request_bytes"] + 1), 413,
        f"request body is {LIMITS['max_request_bytes'] + 1} bytes, " + _over("max_request_bytes")),
    bad("short too small", {"image": b64(JPEG), "short": 8}, 400, '"short" must be an integer between 32 and 1024, got 8'),
    bad("short too large", {"image": b64(JPEG), "short": 1025}, 400, '"short" must be an integer between 32 and 1024, got 1025'),
    bad("short a string", {"image": b64(JPEG), "short": "224"}, 400, "\"short\" must be an integer between 32 and 1024, got '224'"),
    bad("short a float", {"image": b64(JPEG), "short": 224.0}, 400, '"short" must be an integer between 32 and 1024, got 224.0'),
    bad("short a boolean", {"image": b64(JPEG), "short": True}, 400, '"short" must be an integer between 32 and 1024, got True'),
    bad("Accept CSV", {"image": b64(JPEG), "short": 224}, 406, "unsupported Accept 'text/csv'; this model answers application/json",
        accept="text/csv"),
]
BAD_BY_NAME = {row.name: row for row in BAD}
GOOD_REQUESTS = [request(document, accept=accept) for _, _, _, _, document, accept in GOOD]

# Content-Type x Accept, through the toolkit: the detector takes only the JSON image contract and answers only JSON.
# input_fn checks the Content-Type and the body before output_fn checks the Accept (as the PyTorch handler does):
# an unsupported Content-Type is a 415 and a body of the wrong contract a 400 whatever the Accept; a 406 only
# for a request the detector would otherwise answer.
SMALL_JPEG = image_bytes(96, 64, "JPEG")
SMALL_PNG = image_bytes(64, 96, "PNG")
MATRIX_BODIES = {
    "npy": (npy(np.zeros((1, 3, 64, 64), np.float32)), "application/x-npy"),
    "JSON instances": (json.dumps({"instances": np.zeros((1, 3, 4, 4)).tolist()}), "application/json"),
    "JSON image": ({"image": b64(SMALL_JPEG), "short": 224}, "application/json"),
    "JPEG": (SMALL_JPEG, "image/jpeg"),
    "PNG": (SMALL_PNG, "image/png"),
}
MATRIX_ACCEPTS = {"JSON": "application/json", "npy": "application/x-npy", "*/*": "*/*", "none": None, "unsupported": "text/csv"}


def matrix_answer(body_name, accept_name):
    """(status, fragment of the error, or None for a 200 JSON detection) for one Content-Type x Accept."""
    body, content_type = MATRIX_BODIES[body_name]
    if content_type != "application/json":
        return 415, f"unsupported content type {content_type!r}; send application/json with an image"
    if body_name == "JSON instances":
        return 400, "unknown JSON key(s) ['instances']; accepted keys: ['image', 'short']"
    if accept_name in ("npy", "unsupported"):
        return 406, f"unsupported Accept {MATRIX_ACCEPTS[accept_name]!r}; this model answers application/json"
    return 200, None


CROSSED = [(body_name, accept_name) for body_name in MATRIX_BODIES for accept_name in MATRIX_ACCEPTS]
CROSSED_REQUESTS = [request(MATRIX_BODIES[b][0], MATRIX_BODIES[b][1], MATRIX_ACCEPTS[a]) for b, a in CROSSED]
# Every good and bad request in one worker, then the Content-Type x Accept matrix, then the first good one again:
# the worker keeps serving.
MATRIX = GOOD_REQUESTS + [as_request(row) for row in BAD] + CROSSED_REQUESTS + [GOOD_REQUESTS[0]]
BAD_OFFSET, CROSSED_OFFSET = len(GOOD), len(GOOD) + len(BAD)


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------ environments


def build_python():
    if not MXNET_PYTHON.exists():
        pytest.fail(f"the MXNet build venv (GluonCV, MXNet 1.9.1) is missing: no {MXNET_PYTHON}; run `make setup-mxnet`")
    return MXNET_PYTHON


def runtime_python(name):
    """The runtime's python; a ConfigError with the command that builds it when its venv is missing."""
    from runtimes import RUNTIMES

    return RUNTIMES[name].require()


def run(python, *args, cwd=REPO, env=None, timeout=600, check=True):
    """python *args with the repository on PYTHONPATH; env entries set to None are removed."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}
    process = subprocess.run([str(python), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)
    if check:
        assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return process


def export(out, *extra):
    return run(build_python(), "-m", "model_artifacts.mxnet_export", "--model", MODEL, "--out", out, *extra)


def runtime_export(name, graph, out, check=True):
    return run(runtime_python(name), "-m", "model_artifacts.mxnet_runtime_export", "--graph", graph, "--out", out, check=check)


def lay_out_code(directory):
    """directory/code/ as the archive has it (model_artifacts/manifest.py handler_code): the handler, the module it
    shares with the PyTorch handler, and requirements.txt."""
    for name, source in handler_code("mxnet").items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, directory / name)
    return directory / "code"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The GluonCV build in .venv-mxnet: model-symbol.json + model-0000.params + export.json + parity/."""
    out = tmp_path_factory.mktemp("graph")
    export(out)
    return out


@pytest.fixture(scope="module")
def model_bases(graph, tmp_path_factory):
    """Per runtime, SAGEMAKER_BASE_DIR: model/ holds what model.tar.gz holds (the runtime's model files + code/)."""
    bases = {}
    for name in RUNTIMES:
        base = tmp_path_factory.mktemp(f"opt-ml-{name}")
        model_dir = base / "model"
        runtime_export(name, graph, model_dir)
        (model_dir / "export.json").unlink()  # not in model.tar.gz
        lay_out_code(model_dir)
        bases[name] = base
    return bases


@pytest.fixture(scope="module")
def serve(model_bases, tmp_path_factory):
    """serve(runtime, mode) -> the driver's answers; one driver process per runtime and mode, run once."""
    done = {}

    def get(name, mode="serve"):
        if (name, mode) not in done:
            accelerator = mode == "accelerator"
            requests = GOOD_REQUESTS[:1] + [as_request(BAD_BY_NAME["no Content-Type"]), GOOD_REQUESTS[1]] if accelerator else MATRIX
            work = tmp_path_factory.mktemp(f"driver-{name}-{mode}")
            (work / "driver.py").write_text(DRIVER)
            base = model_bases[name]
            spec = {**SERVING[name], "model_dir": str(base / "model"), "requests": requests, "extras": not accelerator}
            (work / "spec.json").write_text(json.dumps(spec))
            python = runtime_python(name)
            env = {
                "SAGEMAKER_BASE_DIR": str(base),
                "SAGEMAKER_PROGRAM": "inference.py",
                "SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT": "true" if accelerator else "false",
                "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}",  # model-archiver, as in the image
                "PYTHONPATH": None,  # nothing from this repository: the image has only model.tar.gz
                **LIMITS_ENV,  # serving.limits, as the container environment carries them
            }
            started = time.monotonic()
            process = run(python, work / "driver.py", work / "spec.json", cwd=work, env=env)
            result = json.loads(process.stdout.split("DRIVER-RESULT ", 1)[1])
            result["stderr"], result["seconds"] = process.stderr, time.monotonic() - started
            done[name, mode] = result
        return done[name, mode]

    return get


@pytest.fixture(scope="module")
def references(graph, tmp_path_factory):
    """In the build venv (MXNet 1.9.1 + gluoncv), per good image: the handler's input tensor against gluoncv's
    transform_test, and the build network's answer to it."""
    script = textwrap.dedent('''
        import base64, json, sys
        sys.modules.setdefault("torch", None)
        import mxnet as mx, numpy as np
        from gluoncv.data.transforms.presets.ssd import transform_test
        graph, code_dir, images = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
        sys.path.insert(0, code_dir)
        import inference
        net = mx.gluon.SymbolBlock.imports(graph + "/model-symbol.json", ["data"], graph + "/model-0000.params", ctx=mx.cpu())
        results = []
        for image in images:
            data = base64.b64decode(image["image_b64"])
            tensor = inference.preprocess(inference.decode_image(data), image["short"])
            expected, _ = transform_test(mx.image.imdecode(data), short=image["short"])
            cid, score, bbox = net(tensor)
            results.append({"shape": list(tensor.shape), "gluoncv_shape": list(expected.shape),
                            "max_abs_diff_to_gluoncv": float(np.abs(tensor.asnumpy() - expected.asnumpy()).max()),
                            "cid": cid[0].asnumpy().tolist(), "score": score[0].asnumpy().tolist(), "bbox": bbox[0].asnumpy().tolist()})
        print("DRIVER-RESULT " + json.dumps(results))
    ''')
    work = tmp_path_factory.mktemp("reference")
    (work / "reference.py").write_text(script)
    images = [{"image_b64": b64(data), "short": document.get("short", 512)} for _, data, _, _, document, _ in GOOD]
    (work / "images.json").write_text(json.dumps(images))
    process = run(build_python(), work / "reference.py", graph, lay_out_code(work), work / "images.json")
    return json.loads(process.stdout.split("DRIVER-RESULT ", 1)[1])


# ------------------------------------------------------------------------------------ build: graph and runtime export


@pytest.mark.slow
def test_the_graph_build_writes_the_toolkit_file_names_and_a_parity_reference(graph):
    assert (graph / "model-symbol.json").is_file() and (graph / "model-0000.params").is_file()
    info = json.loads((graph / "export.json").read_text())
    assert info["model"] == MODEL and info["mxnet_version"] == "1.9.1"
    assert info["input"]["short_default"] == 512 and info["classes"] == 80 == len(info["class_names"])
    assert info["output_shapes"] == {"cid": [1, DETECTIONS, 1], "score": [1, DETECTIONS, 1], "bbox": [1, DETECTIONS, 4]}
    assert info["weights"]["source"] == "random" and info["weights"]["seed"] == 0
    # MXNet 1.4.1 and 1.5.1 (EIA runtimes) have no _contrib_box_decode: the export decodes boxes without it.
    assert "_contrib_box_decode" not in info["operators"] and "_contrib_box_nms" in info["operators"]
    assert sorted(p.name for p in (graph / "parity").iterdir()) == ["bbox.npy", "cid.npy", "input.npy", "score.npy"]
    assert np.load(graph / "parity" / "input.npy").shape == (1, 3, 512, 512)
    assert np.load(graph / "parity" / "bbox.npy").shape == (1, DETECTIONS, 4)


@pytest.mark.slow
def test_two_graph_builds_are_byte_identical(graph, tmp_path):
    export(tmp_path)
    names = ["model-symbol.json", "model-0000.params", "export.json"] + [f"parity/{p.name}" for p in (graph / "parity").iterdir()]
    for name in names:
        assert (tmp_path / name).read_bytes() == (graph / name).read_bytes(), name
    assert b" object at 0x" not in (tmp_path / "model-symbol.json").read_bytes()


@pytest.mark.slow
def test_the_graph_build_loads_user_weights_and_refuses_files_that_do_not_fit(graph, tmp_path):
    weights = tmp_path / "weights.params"
    script = (  # weights as a user saves them: net.save_parameters, here of another random draw
        "import mxnet as mx; from gluoncv import model_zoo; from model_artifacts.mxnet_export import _initialize; "
        f"mx.random.seed(7); net = model_zoo.get_model({MODEL!r}, pretrained=False, pretrained_base=False); "
        "_initialize(mx, net); net(mx.nd.zeros((1, 3, 64, 64))); net.save_parameters(%r)" % str(weights)
    )
    run(build_python(), "-c", script)
    export(tmp_path / "out", "--weights", weights)
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["weights"]["source"] == "file" and info["weights"]["file"] == "weights.params"
    assert (tmp_path / "out" / "model-0000.params").read_bytes() != (graph / "model-0000.params").read_bytes()

    wrong = tmp_path / "wrong.params"
    run(build_python(), "-c", "import mxnet as mx; mx.nd.save(%r, {'w': mx.nd.zeros((2,))})" % str(wrong))
    process = run(build_python(), "-m", "model_artifacts.mxnet_export", "--model", MODEL, "--out", tmp_path / "bad",
                  "--weights", wrong, check=False)
    assert process.returncode != 0 and "not ssd_512_mobilenet1.0_coco parameters" in process.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name, version, symbol_version", [(EIA_RUNTIME, "1.4.1", 10401), (RUNTIME_190, "1.9.0", 10900)])
def test_each_runtime_writes_the_model_files_with_its_own_mxnet_after_a_parity_check(model_bases, graph, name, version, symbol_version):
    model_dir = model_bases[name] / "model"
    symbol = json.loads((model_dir / "model-symbol.json").read_text())
    assert symbol["attrs"]["mxnet_version"] == ["int", symbol_version]  # written by the runtime's MXNet, not 1.9.1
    assert json.loads((graph / "model-symbol.json").read_text())["attrs"]["mxnet_version"] == ["int", 10901]
    # The same graph and weights: nodes and parameter values unchanged.
    assert symbol["nodes"] == json.loads((graph / "model-symbol.json").read_text())["nodes"]


@pytest.mark.slow
def test_the_runtime_export_records_its_mxnet_and_parity_and_is_byte_reproducible(graph, tmp_path):
    """Two conversions in the EIA runtime (MXNet 1.4.1 on Python 3.6): identical bytes, and a record of the check."""
    first, second = tmp_path / "first", tmp_path / "second"
    runtime_export(EIA_RUNTIME, graph, first)
    runtime_export(EIA_RUNTIME, graph, second)
    for name in ("model-symbol.json", "model-0000.params", "export.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    info = json.loads((first / "export.json").read_text())
    assert info["mxnet_version"] == "1.4.1" and info["python_version"].startswith("3.6.")
    assert info["graph"]["mxnet_version"] == "1.9.1" and info["graph"]["model"] == MODEL
    parity = info["parity"]
    assert parity["checked_with"] == "1.4.1" and parity["input_shape"] == [1, 3, 512, 512]
    assert set(parity["max_abs_diff"]) == {"cid", "score", "bbox"}
    assert all(0 <= value <= parity["atol"] + parity["rtol"] * 1024 for value in parity["max_abs_diff"].values()), parity


@pytest.mark.slow
def test_a_parity_mismatch_stops_the_runtime_export_and_names_the_first_output_that_differs(graph, tmp_path):
    tampered = tmp_path / "graph"
    tampered.mkdir()
    for name in ("model-symbol.json", "model-0000.params", "export.json"):
        (tampered / name).symlink_to(graph / name)
    shutil.copytree(graph / "parity", tampered / "parity")
    score = np.load(tampered / "parity" / "score.npy")
    score[0, 3, 0] += 0.01  # as if the runtime scored the fourth detection differently
    np.save(tampered / "parity" / "score.npy", score)
    bbox = np.load(tampered / "parity" / "bbox.npy")
    bbox[0, 0, 0] += 5.0  # a later output differs too: the error names the first one, score
    np.save(tampered / "parity" / "bbox.npy", bbox)
    process = runtime_export(EIA_RUNTIME, tampered, tmp_path / "out", check=False)
    assert process.returncode == 2, process.stderr
    error = process.stderr.strip().splitlines()[-1]
    assert error.startswith("error: parity: MXNet 1.4.1 (this runtime) answers a different score than MXNet 1.9.1 (the build)"), error
    assert "1 of 100 values differ, first at [0, 3, 0]" in error and "bbox" not in error
    assert not (tmp_path / "out" / "export.json").exists()


def test_the_exporters_never_import_torch_or_the_main_stack_and_the_runtime_step_needs_no_gluoncv():
    for path in (EXPORTER, RUNTIME_EXPORTER):
        modules = {name.split(".")[0] for name in _imported_modules(path)}
        assert not {"torch", "torchvision", "aws_cdk", "config", "stacks"} & modules, (path, modules)
    runtime_modules = {name.split(".")[0] for name in _imported_modules(RUNTIME_EXPORTER)}
    assert runtime_modules <= {"argparse", "hashlib", "json", "os", "platform", "sys", "mxnet", "numpy"}, runtime_modules


# ------------------------------------------------------------------------------------ handler: good requests


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_runtime_serves_through_its_own_toolkit_and_loads_without_a_version_warning(serve, runtime):
    result = serve(runtime)
    assert result["handler"].split(":")[0] == "sagemaker_mxnet_serving_container.handler_service"
    assert result["mxnet"] == {EIA_RUNTIME: "1.4.1", RUNTIME_190: "1.9.0"}[runtime]
    assert len(result["answers"]) == len(MATRIX)
    # The model files were written by this MXNet: no "loading symbol saved by MXNet version ..." warning.
    assert "saved by MXNet version" not in result["stderr"], result["stderr"][-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("index", range(len(GOOD)), ids=[name for name, *_ in GOOD])
def test_answers_the_source_documents_contract(serve, runtime, index):
    _, _, width, height, document, _ = GOOD[index]
    answer = serve(runtime)["answers"][index]
    assert answer["status"] == 200 and answer["content_type"] == "application/json", answer
    body = strict_json(answer["body"])
    assert sorted(body) == ["bbox", "cid", "score", "shape"]
    assert body["shape"] == expected_shape(width, height, document.get("short", 512))
    assert np.asarray(body["cid"]).shape == (DETECTIONS, 1) and np.asarray(body["score"]).shape == (DETECTIONS, 1)
    assert np.asarray(body["bbox"]).shape == (DETECTIONS, 4)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("index", range(len(GOOD)), ids=[name for name, *_ in GOOD])
def test_answers_what_the_built_network_answers_for_the_same_image(serve, references, runtime, index):
    """The runtime's decode, preprocessing and network against the build venv's (MXNet 1.9.1) on the same image."""
    body, reference = json.loads(serve(runtime)["answers"][index]["body"]), references[index]
    assert body["shape"] == reference["shape"]
    for key in ("cid", "score", "bbox"):
        np.testing.assert_allclose(body[key], reference[key], rtol=1e-4, atol=1e-3, err_msg=key)


@pytest.mark.slow
def test_preprocessing_equals_gluoncvs_ssd_transform_test(references):
    for reference in references:
        assert reference["shape"] == reference["gluoncv_shape"]
        assert reference["max_abs_diff_to_gluoncv"] == 0.0, reference["max_abs_diff_to_gluoncv"]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_worker_keeps_serving_after_bad_requests(serve, runtime):
    answers = serve(runtime)["answers"]
    assert answers[-1]["status"] == 200 and answers[-1]["body"] == answers[0]["body"]


@pytest.mark.slow
def test_the_eia_toolkit_calls_the_handler_with_two_arguments_and_the_190_toolkit_with_its_context(serve):
    """What the status tests below rely on: the 1.4.1 image's toolkit passes no context to the handler."""
    assert serve(EIA_RUNTIME)["arities"] == {"input_fn": [2], "predict_fn": [2], "output_fn": [2]}
    assert serve(RUNTIME_190)["arities"] == {"input_fn": [3], "predict_fn": [3], "output_fn": [3]}


# ------------------------------------------------------------------------------------ handler: bad requests


def assert_one_line_json_error(answer, runtime, status, fragment):
    """The toolkit's answer to a refused request: its status, and the handler's one-line JSON body with the message."""
    assert answer["worker_code"] == 200, answer  # the worker answered; the status is the request's own
    assert answer["status"] == status, answer
    assert "Traceback" not in answer["body"] and "\n" not in answer["body"].strip(), answer["body"]
    error = json.loads(answer["body"])
    assert sorted(error) == ["error", "status"] and error["status"] == status, error
    assert fragment in error["error"], (fragment, error["error"])
    # The reason phrase is the message (one line): set through the context (1.10.1), or carried by the toolkit's
    # error class (1.1.0).
    assert answer["phrase"] == error["error"] and "\n" not in answer["phrase"], answer
    if runtime == RUNTIME_190:  # the handler sets status and content type through the toolkit's context
        assert answer["content_type"] == "application/json", answer
    else:  # sagemaker-inference 1.1.0 answers GenericInferenceToolkitError: status and phrase, no content type
        assert answer["content_type"] == "", answer


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("index", range(len(BAD)), ids=[row.name for row in BAD])
def test_bad_requests_get_their_status_and_message_in_a_one_line_json_error(serve, runtime, index):
    row = BAD[index]
    assert_one_line_json_error(serve(runtime)["answers"][BAD_OFFSET + index], runtime, row.status, row.message)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("index", range(len(CROSSED)), ids=[f"{body} x accept {accept}" for body, accept in CROSSED])
def test_each_content_type_and_accept_gets_its_defined_answer(serve, runtime, index):
    """{npy, JSON instances, JSON image, JPEG, PNG} x Accept {JSON, npy, */*, none, unsupported}, through the toolkit."""
    status, fragment = matrix_answer(*CROSSED[index])
    answer = serve(runtime)["answers"][CROSSED_OFFSET + index]
    if status != 200:
        assert_one_line_json_error(answer, runtime, status, fragment)
        return
    assert answer["status"] == 200 and answer["content_type"] == "application/json", answer
    body = strict_json(answer["body"])
    assert sorted(body) == ["bbox", "cid", "score", "shape"] and body["shape"] == expected_shape(96, 64, 224)


def test_the_content_type_and_accept_matrix_covers_every_answer():
    """The table is the brief's: every body and Accept, and each of 200, 400, 406 and 415 is in it."""
    assert len(CROSSED) == 25 and len(set(CROSSED)) == 25
    statuses = {}
    for body_name, accept_name in CROSSED:
        statuses.setdefault(matrix_answer(body_name, accept_name)[0], []).append((body_name, accept_name))
    assert sorted(statuses) == [200, 400, 406, 415]
    assert statuses[200] == [("JSON image", accept) for accept in ("JSON", "*/*", "none")]
    assert statuses[406] == [("JSON image", "npy"), ("JSON image", "unsupported")]
    # The Content-Type wins over the Accept: wrong in both is a 415.
    assert ("npy", "unsupported") in statuses[415] and ("JPEG", "npy") in statuses[415]


@pytest.mark.slow
def test_non_finite_detections_become_empty_rows_so_the_body_stays_strict_json(serve):
    for runtime in RUNTIMES:
        body = strict_json(serve(runtime)["nonfinite"])
        assert body["shape"] == [1, 3, 64, 64]
        assert body["cid"] == [[0.0], [-1.0], [-1.0]] and body["score"] == [[0.5], [-1.0], [-1.0]]
        assert body["bbox"] == [[1.0] * 4, [-1.0] * 4, [-1.0] * 4]


# ------------------------------------------------------------------------------------ Elastic Inference


@pytest.mark.slow
def test_the_eia_runtime_runs_the_network_in_the_accelerator_context_when_the_container_says_one_is_attached(serve):
    """SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT=true (set by the EIA containers): model and inputs in mx.eia()."""
    accelerated, plain = serve(EIA_RUNTIME, "accelerator"), serve(EIA_RUNTIME)
    assert accelerated["model_contexts"] == [ACCELERATOR_CONTEXT] and accelerated["eia_calls"] > 0
    # Same CPU underneath: the same answers, bad requests included.
    assert [a["status"] for a in accelerated["answers"]] == [200, 415, 200]
    assert accelerated["answers"][0]["body"] == plain["answers"][0]["body"]
    assert accelerated["answers"][2]["body"] == plain["answers"][1]["body"]


@pytest.mark.slow
def test_without_an_attached_accelerator_the_eia_runtime_stays_on_the_cpu(serve):
    plain = serve(EIA_RUNTIME)  # mx.eia() exists (as in the image) but SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT=false
    assert plain["model_contexts"] == [CPU_CONTEXT] and plain["eia_calls"] == 0
    non_eia = serve(RUNTIME_190)  # the MXNet 1.9.0 images have no mx.eia()
    assert non_eia["model_contexts"] == [CPU_CONTEXT] and non_eia["eia_calls"] == 0


@pytest.mark.slow
def test_without_mx_eia_the_handler_uses_the_eimx_backend_or_the_cpu(serve):
    """The MXNet 1.7.0 EIA images partition the graph for eimx's "EIA" backend; neither present: the CPU."""
    result = serve(RUNTIME_190)
    assert result["eimx"] == {"context": CPU_CONTEXT, "hybridize": {"backend": "EIA"}}
    assert result["no EIA runtime"] == {"context": CPU_CONTEXT, "hybridize": {}}


@pytest.mark.slow
@pytest.mark.parametrize("runtime, mode", [(EIA_RUNTIME, "serve"), (EIA_RUNTIME, "accelerator"), (RUNTIME_190, "serve")])
def test_the_served_graph_is_cached_for_every_input_shape_not_for_one(serve, runtime, mode):
    """Every request has its own (H, W) (the aspect ratio is kept): static_shape=True re-planned the cached graph on
    almost every call, and static buffers held about 300 MB more per worker for no speed on changing shapes
    (measured in both runtimes; inference.py model_fn). The graph is hybridized, its memory allocated per call."""
    flags = serve(runtime, mode)["hybridize_flags"]
    assert not flags.get("static_alloc") and not flags.get("static_shape"), flags


# ------------------------------------------------------------------------------------ sources


def test_the_handler_and_the_runtime_step_are_python_3_6_valid(tmp_path):
    """The EIA images (MXNet 1.4.1, 1.5.1, 1.7.0) run Python 3.6; vermin fails on anything newer."""
    vermin = REPO / ".venv" / "bin" / "vermin"
    vermin = str(vermin) if vermin.exists() else shutil.which("vermin") or "vermin"
    newer = tmp_path / "newer.py"
    newer.write_text("if (n := 3) > 2:\n    print(n)\n")  # 3.8 syntax: proves the check bites
    assert subprocess.run([vermin, "-t=3.6-", "--no-tips", "--violations", str(newer)], capture_output=True).returncode != 0
    for path in (HANDLER, REPO / "inference_src" / "request_handling.py", RUNTIME_EXPORTER):
        result = subprocess.run([vermin, "-t=3.6-", "--no-tips", "--violations", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_handler_imports_only_what_every_mxnet_serving_image_has():
    modules = {name.split(".")[0] for name in _imported_modules(HANDLER)}
    assert modules <= {"json", "logging", "os", "struct", "mxnet", "numpy", "request_handling", "eimx"}, modules
    assert "gluoncv" not in modules and "subprocess" not in modules


def test_a_missing_runtime_venv_fails_with_the_command_that_builds_it(monkeypatch, tmp_path):
    import runtimes
    from config import ConfigError

    monkeypatch.setattr(runtimes, "VENVS_DIR", tmp_path / "no-venvs")
    with pytest.raises(ConfigError, match=r"the eia-mxnet-1\.4\.1 runtime .* has no venv .*run `make runtimes`"):
        runtime_python(EIA_RUNTIME)


def _imported_modules(path):
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
    return modules
