"""Runs the packaged handler through a runtime's own SageMaker toolkit, in process, in that runtime's venv.

Run by the runtime's python (tests/test_handler.py), never imported by the tests: Python 3.6 and 3.12,
nothing but that venv's packages. The serving containers' path without the Java model server:
HandlerService.initialize(context), then HandlerService.handle([{"body": ...}], context) per request,
with the model server's own Context (multi-model-server's in the EIA images, TorchServe's in 2.x).

    python tests/handler_driver.py JOB.json

JOB: {"model_dir", "model_server": "mms" | "torchserve", "env": {...}, "standins": folder or null,
      "requests": [{"name", "body_b64", "content_type", "accept"}],
      "reference": {name: npy_b64}  (batches to run through model.pt directly, no handler),
      "preprocess": [{"name", "image_b64", "input_shape", "short"}]  (inference.preprocess_image, default settings)}
Prints one line: DRIVER-RESULT {"responses", "reference", "preprocessed", "model", "eia", "eia_after_model_fn",
"ran_a_graph_before_model_fn", "graph_run_by_model_fn", "versions"}.
"""
import base64
import io
import json
import os
import sys


def b64(data):
    return base64.b64encode(data).decode("ascii")


def npy_b64(array):
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return b64(buffer.getvalue())


def npy_load(encoded):
    import numpy as np

    return np.load(io.BytesIO(base64.b64decode(encoded)), allow_pickle=False)


def direct_forward(model_dir, batches):
    """model.pt (or recipe aoti's model.pt2) loaded and called with no handler and no toolkit: the reference for
    the handler's logits."""
    import torch

    if os.path.exists(os.path.join(model_dir, "model.pt2")):
        import torch._inductor

        module = torch._inductor.aoti_load_package(os.path.join(model_dir, "model.pt2"))
    else:
        module = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu")
        module.eval()
    with torch.no_grad():
        return {name: npy_b64(module(torch.from_numpy(npy_load(encoded))).numpy()) for name, encoded in batches.items()}


def count_aoti_package_calls():
    """The input shapes an AOTInductor package (recipe aoti) is called with, from now on."""
    from torch._inductor.package.package import AOTICompiledModel

    calls, call = [], AOTICompiledModel.__call__

    def counted(self, *args, **kwargs):
        calls.append(tuple(args[0].shape))
        return call(self, *args, **kwargs)

    AOTICompiledModel.__call__ = counted
    return calls


def install_standins(folder):
    """The EI entry points of the images (tests/standins): torcheia importable, torch_eia 1.3.1's signature."""
    import torch

    sys.path.insert(0, folder)
    if torch.__version__.startswith("1.3."):
        import torch_eia_1_3

        torch_eia_1_3.install()
    if hasattr(torch._C, "_jit_set_profiling_executor"):
        torch._C._jit_set_profiling_executor(True)  # the default: the handler must turn it off itself
    # Off, so a forward that sees it on ran inside the handler's optimized_execution(True).
    torch._C._set_graph_executor_optimize(False)


def eia_record():
    """What the handler did with the accelerator entry points, so far."""
    import torch

    record = {"torcheia_imported": "torcheia" in sys.modules, "attach_calls": [], "forwards": [],
              "optimized_execution_calls": None, "profiling_executor": None}
    if "torcheia" in sys.modules:
        record["attach_calls"] = list(sys.modules["torcheia"].calls)
        record["forwards"] = list(sys.modules["torcheia"].forwards)
    if "torch_eia_1_3" in sys.modules:
        record["optimized_execution_calls"] = list(sys.modules["torch_eia_1_3"].calls)
    if hasattr(torch._C, "_jit_set_profiling_executor"):
        state = torch._C._jit_set_profiling_executor(True)  # returns the previous state; put it back
        torch._C._jit_set_profiling_executor(state)
        record["profiling_executor"] = state
    return record


def toolkit_classes(model_server):
    if model_server == "mms":
        from mms.context import Context, RequestProcessor
    else:
        from ts.context import Context, RequestProcessor
    from sagemaker_pytorch_serving_container.handler_service import HandlerService

    return HandlerService, Context, RequestProcessor


def headers_of(request):
    headers = {}
    if request.get("content_type"):
        headers["Content-Type"] = request["content_type"]
    if request.get("accept"):
        headers["Accept"] = request["accept"]
    return headers


def answer_of(answer):
    if isinstance(answer, (bytes, bytearray)):
        return {"body_b64": b64(bytes(answer))}
    return {"text": answer}


def model_facts(service):
    """The model the toolkit's transformer holds, as model_fn returned it."""
    model = service._service._model
    module = getattr(model.module, "module", model.module)  # a torcheia stand-in wraps the module
    graph = getattr(module, "graph", None)
    return {"type": type(model).__name__, "device": str(model.device), "info": model.info,
            "module_type": type(model.module).__name__, "graph": str(graph) if graph is not None else ""}


def distribution_versions(model_server):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources' deprecation warning on new setuptools
        import pkg_resources

    names = ["sagemaker-inference", "sagemaker-pytorch-inference", "multi-model-server" if model_server == "mms" else "torchserve"]
    return {name: pkg_resources.get_distribution(name).version for name in names}


def main():
    job = json.load(open(sys.argv[1]))
    model_dir = job["model_dir"]
    result = {}
    os.environ.update(job.get("env") or {})
    if job.get("standins"):
        install_standins(job["standins"])
    sys.path.insert(0, os.path.join(model_dir, "code"))  # the model server's working dir for the user module

    import numpy
    import PIL
    import torch

    HandlerService, Context, RequestProcessor = toolkit_classes(job["model_server"])
    service = HandlerService()
    context = Context("model", model_dir, {"model": {}}, 1, None, "test")
    context.request_processor = [RequestProcessor({})]
    # The graph the JIT ran last, on this thread: none yet, so one after initialize is model_fn's warm-up.
    result["ran_a_graph_before_model_fn"] = torch._C._last_executed_optimized_graph() is not None
    package_calls = count_aoti_package_calls() if os.path.exists(os.path.join(model_dir, "model.pt2")) else []
    service.initialize(context)
    graph = torch._C._last_executed_optimized_graph()
    result["graph_run_by_model_fn"] = str(graph) if graph is not None else None
    result["package_calls_in_model_fn"] = [list(shape) for shape in package_calls]  # AOTInductor runs no JIT graph
    result["eia_after_model_fn"] = eia_record()
    result["model"] = model_facts(service)

    responses = {}
    for request in job.get("requests") or []:
        context.request_processor = [RequestProcessor(headers_of(request))]
        answer = service.handle([{"body": base64.b64decode(request["body_b64"])}], context)[0]
        response = answer_of(answer)
        response["status"], response["phrase"] = context.get_response_status(0)
        response["content_type"] = context.get_response_content_type(0)
        responses[request["name"]] = response
    result["responses"] = responses
    result["eia"] = eia_record()

    import inference  # the packaged copy the toolkit imported

    result["preprocessed"] = {}
    for item in job.get("preprocess") or []:
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(item["image_b64"])))
        chw = inference.preprocess_image(image, item["input_shape"], inference.DEFAULT_IMAGE_PREPROCESSING, item.get("short"))
        # draft() shrinks a JPEG's size in place, before decoding: the size it was decoded at.
        result["preprocessed"][item["name"]] = {"chw": npy_b64(chw), "decoded_size": list(image.size)}
    torch._C._set_graph_executor_optimize(True)
    result["reference"] = direct_forward(model_dir, job.get("reference") or {})
    result["versions"] = {"python": "{}.{}".format(*sys.version_info[:2]), "torch": torch.__version__,
                          "numpy": numpy.__version__, "pillow": PIL.__version__, "handler": inference.__file__,
                          "toolkit": distribution_versions(job["model_server"])}
    print("DRIVER-RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
