"""The latency benchmark's measuring half, run by the cpu/serverless runtime's own Python and torch (2.6.0).

    <runtime python> -m benchmarks.latency_runtime steady JOB.json    # every form, interleaved: JSON on stdout
    <runtime python> -m benchmarks.latency_runtime cold FORM PATH     # one form's cold start, in a fresh process

benchmarks/latency.py starts it with PYTHONPATH = the repository + ONNX Runtime installed for this Python (a
benchmark peer, never part of the runtime's venv). Each form is built and loaded exactly as the build and the
handler do it (model_artifacts.runtime_export: convert/compile, then load_served).
"""
import json
import sys
import time
from pathlib import Path

from benchmarks.common import CpuMonitor, Progress, interleaved, summarize

THREADS = 2
RECIPES = ("trace", "script", "optimized", "aoti")
ORT = "onnxruntime"
FORM_FILES = {"trace": "trace.pt", "script": "script.pt", "optimized": "optimized.pt", "aoti": "model.pt2", ORT: "model.onnx"}


def ort_session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def load_form(form: str, path: str):
    """A callable on a torch tensor, as the endpoint (or ORT) would run it."""
    if form == ORT:
        session = ort_session(path)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})[0]
    from model_artifacts.runtime_export import load_served

    return load_served(path, form)


def steady(job: dict) -> dict:
    import numpy as np
    import torch

    from model_artifacts.example_models import build_example_model
    from model_artifacts.runtime_export import compile_aoti, convert

    torch.set_num_threads(THREADS)
    progress = Progress("latency", enabled=job["verbose"])
    work = Path(job["work_dir"])
    shape = job["input_shape"]
    eager = build_example_model(job["model"])
    # The coordinator's weights, which its ONNX export holds too: every form computes the same function.
    eager.load_state_dict(torch.load(job["weights"], weights_only=True))
    eager.eval()
    example = torch.zeros(shape)
    with torch.no_grad():
        for recipe in RECIPES:
            path = work / FORM_FILES[recipe]
            started = time.perf_counter()
            if recipe == "aoti":
                progress.say("compiling recipe 'aoti' (torch.export, AOTInductor with freezing, g++)")
                compile_aoti(eager, example, str(path))
            else:
                progress.say(f"converting with recipe {recipe!r}")
                torch.jit.save(convert(eager, recipe, example), str(path))
            progress.say(f"  {recipe} built in {time.perf_counter() - started:.1f}s")
    runners = {"eager": eager, **{form: load_form(form, str(work / FORM_FILES[form])) for form in (*RECIPES, ORT)}}

    batches, rounds = {}, {}
    with torch.no_grad():
        for batch in job["batches"]:
            x = torch.randn([batch] + shape[1:], generator=torch.Generator().manual_seed(batch))
            reference = eager(x).numpy()
            errors = {name: float(np.abs(np.asarray(runner(x)) - reference).max()) for name, runner in runners.items()}
            plan = job["rounds"][str(batch)]
            progress.say(f"batch {batch}: {len(runners)} variants, {plan['warmup']} warm-up runs each, then "
                         f"{plan['min_rounds']}-{plan['max_rounds']} interleaved rounds of 1 untimed + {plan['timed_runs']} timed "
                         f"runs each (about {plan['budget_s']:.0f}s)")
            timings = interleaved({name: (lambda r: lambda: r(x))(runner) for name, runner in runners.items()},
                                  monitor=CpuMonitor, progress=progress, label=f"batch {batch}: ", **plan)
            batches[str(batch)] = {name: {**summarize(s), "max_abs_error_vs_eager": errors[name]} for name, s in timings.samples.items()}
            rounds[str(batch)] = {**timings.record(), "described": timings.describe()}
            progress.say(f"batch {batch} ({timings.describe()}): "
                         + ", ".join(f"{n} {s['median_ms']:.1f} ms" for n, s in batches[str(batch)].items()))
    return {"torch": torch.__version__.split("+")[0], "python": "{}.{}".format(*sys.version_info[:2]),
            "batches": batches, "rounds": rounds, "files": {form: str(work / name) for form, name in FORM_FILES.items()}}


def cold(form: str, path: str, input_shape) -> dict:
    """torch is imported first (every form pays the same for it); then the load as served, and the first
    request at the model's input shape, which is where lazy initialization lands."""
    import torch

    torch.set_num_threads(THREADS)
    x = torch.zeros(input_shape)
    with torch.no_grad():
        started = time.perf_counter()
        runner = load_form(form, path)
        loaded = time.perf_counter()
        runner(x)
        first = time.perf_counter()
        runner(x)
        second = time.perf_counter()
    return {"load_s": loaded - started, "first_request_s": first - loaded, "second_request_s": second - first}


def main(argv) -> int:
    if argv[0] == "steady":
        result = steady(json.loads(Path(argv[1]).read_text()))
    else:
        result = cold(argv[1], argv[2], json.loads(argv[3]))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
