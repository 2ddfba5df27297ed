"""CPU latency of the ResNet-50 example: eager vs each TorchScript recipe (as served) vs ONNX Runtime.

Everything runs with 2 intra-op threads (torch.set_num_threads(2); ORT intra_op_num_threads=2), on
the same input, in one process, interleaved round by round (one untimed call per variant and round
absorbs the switch from the previous variant, then timed calls). The TorchScript modules go through
torch.jit.save / torch.jit.load and `served_form` exactly as the handler loads them (for
"optimized": frozen at build, optimize_for_inference at load). ORT runs the eager model exported
with torch.onnx.export (the dynamo exporter, dynamic batch). Target: optimized within 1.15x of ORT.
"""
import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

from benchmarks.common import CpuMonitor, Options, Progress, interleaved, ratio, summarize, target

NAME = "latency"
TITLE = "CPU latency: eager vs TorchScript recipes vs ONNX Runtime"
THREADS = 2
RECIPES = ("trace", "script", "optimized")
ORT = "onnxruntime"
TARGET_VS_ORT = 1.15
FULL = {"model": "example-resnet-50", "input_shape": [1, 3, 224, 224], "batches": [1, 8]}
QUICK = {"model": "example-resnet-tiny", "input_shape": [1, 3, 64, 64], "batches": [1, 8]}
# warm-up runs, then rounds: at least min_rounds, at most max_rounds, stopping after budget_s.
# Per round, each variant makes one untimed call (it absorbs the switch: ORT's worker threads spin on after a
# run and slowed the next variant by up to 1.5x; the other model's weights fill the caches), then timed ones.
# Rounds disturbed by other processes are set aside and replaced, up to give_up_s (see common.interleaved).
ROUNDS = {1: dict(warmup=3, switch_runs=1, timed_runs=2, min_rounds=12, max_rounds=40, budget_s=30.0, give_up_s=60.0),
          8: dict(warmup=2, switch_runs=1, timed_runs=1, min_rounds=6, max_rounds=15, budget_s=60.0, give_up_s=120.0)}
QUICK_ROUNDS = dict(warmup=2, switch_runs=1, timed_runs=1, min_rounds=3, max_rounds=5, budget_s=1.0, give_up_s=0.0)


def run(options: Options, progress: Progress) -> dict:
    import numpy as np
    import torch

    from model_artifacts.example_models import build_example_model
    from model_artifacts.runtime_export import convert, served_form

    sizes = QUICK if options.quick else FULL
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with torch.no_grad(), tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
            progress.say(f"building {sizes['model']} (input {sizes['input_shape']})")
            eager = build_example_model(sizes["model"])
            example = torch.zeros(sizes["input_shape"])
            modules = {"eager": eager}
            for recipe in RECIPES:
                progress.say(f"converting with recipe {recipe!r}, then save/load/served_form as the handler does")
                path = Path(tmp) / f"{recipe}.pt"
                torch.jit.save(convert(eager, recipe, example), str(path))
                modules[recipe] = served_form(torch.jit.load(str(path), map_location="cpu"), recipe)
            runners = {name: (lambda m: lambda x, _: m(x))(module) for name, module in modules.items()}
            session = _ort_session(eager, example, Path(tmp), progress, required=not options.quick)
            if session is not None:
                input_name = session.get_inputs()[0].name
                runners[ORT] = lambda _, array: session.run(None, {input_name: array})

            batches, rounds = {}, {}
            for batch in sizes["batches"]:
                x = torch.randn([batch] + sizes["input_shape"][1:], generator=torch.Generator().manual_seed(batch))
                array = x.numpy()
                reference = eager(x).numpy()
                errors = {name: float(np.abs(_as_array(runner(x, array)) - reference).max()) for name, runner in runners.items()}
                plan = QUICK_ROUNDS if options.quick else ROUNDS[batch]
                progress.say(f"batch {batch}: {len(runners)} variants, {plan['warmup']} warm-up runs each, then "
                             f"{plan['min_rounds']}-{plan['max_rounds']} interleaved rounds of 1 untimed + {plan['timed_runs']} timed "
                             f"runs each (about {plan['budget_s']:.0f}s)")
                timings = interleaved({name: (lambda r: lambda: r(x, array))(runner) for name, runner in runners.items()},
                                      monitor=CpuMonitor, progress=progress, label=f"batch {batch}: ", **plan)
                stats = {name: {**summarize(s), "max_abs_error_vs_eager": errors[name]} for name, s in timings.samples.items()}
                batches[str(batch)], rounds[str(batch)] = stats, {**timings.record(), "described": timings.describe()}
                progress.say(f"batch {batch} ({timings.describe()}): " + ", ".join(f"{n} {s['median_ms']:.1f} ms" for n, s in stats.items()))
    finally:
        torch.set_num_threads(previous_threads)

    targets = []
    for batch, stats in batches.items():
        for name, stat in stats.items():
            stat["vs_eager"] = ratio(stat["median_ms"], stats["eager"]["median_ms"])
            if ORT in stats:
                stat["vs_onnxruntime"] = ratio(stat["median_ms"], stats[ORT]["median_ms"])
        if ORT in stats:
            targets.append(target(f"batch {batch}: optimized median / ONNX Runtime median", stats["optimized"]["vs_onnxruntime"], TARGET_VS_ORT,
                                  short=f"batch {batch} optimized / ORT"))
    notes = [f"{sizes['model']}, input {sizes['input_shape'][1:]} per image; {THREADS} intra-op threads for torch and ONNX Runtime",
             "TorchScript traced/scripted with batch 1 and run at every batch size; ONNX exported with a dynamic batch",
             "order rotates every round; per round each variant makes 1 untimed run (absorbs the switch from the previous "
             "variant), then timed runs; rounds during which other processes used more than 0.25 cores are set aside: "
             + "; ".join(f"batch {b}: {r['described']}" for b, r in rounds.items())]
    if ORT not in runners:
        notes.append("onnxruntime is not installed (pip install -r requirements-bench.txt -c constraints.txt): no ORT column")
    return {"model": sizes["model"], "input_shape": sizes["input_shape"], "threads": THREADS, "batches": batches, "rounds": rounds,
            "targets": targets, "notes": notes}


def _as_array(result):
    import numpy as np

    return np.asarray(result[0] if isinstance(result, list) else result)  # ORT answers a list of outputs


def _ort_session(eager, example, tmp: Path, progress: Progress, required: bool):
    try:
        import onnxruntime
    except ImportError:
        if required:
            raise RuntimeError("onnxruntime is not installed: pip install -r requirements-bench.txt -c constraints.txt")
        return None
    import torch

    progress.say("exporting the eager model to ONNX (torch.onnx.export, dynamo exporter, dynamic batch)")
    path = tmp / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    exporter_log = io.StringIO()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with contextlib.redirect_stdout(exporter_log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(eager, (example,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: batch},))
    finally:
        quiet.setLevel(level)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------ report

COLUMNS = ["batch", "variant", "median ms", "p90 ms", "n", "vs eager", "vs ONNX Runtime"]


def table(section: dict):
    rows = []
    for batch, stats in section["batches"].items():
        for name, stat in stats.items():
            rows.append([batch, _label(name), f"{stat['median_ms']:.1f}", f"{stat['p90_ms']:.1f}", str(stat["n"]),
                         f"{stat['vs_eager']:.2f}x", f"{stat['vs_onnxruntime']:.2f}x" if "vs_onnxruntime" in stat else "—"])
    return COLUMNS, rows


def _label(name: str) -> str:
    return {"optimized": "optimized (served form)", ORT: "ONNX Runtime"}.get(name, name)


def plot(ax, section: dict) -> None:
    batches = list(section["batches"])
    names = list(section["batches"][batches[0]])
    width = 0.8 / len(batches)
    for index, batch in enumerate(batches):
        per_image = [section["batches"][batch][name]["median_ms"] / int(batch) for name in names]
        positions = [i + (index - (len(batches) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(positions, per_image, width, label=f"batch {batch}")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    short = {"optimized": "optimized\n(served)", ORT: "ONNX\nRuntime"}
    ax.set_xticks(range(len(names)), [short.get(n, n) for n in names], fontsize=8)
    ax.set_ylabel("median ms per image")
    ax.set_title(f"CPU latency, {section['model']}, {section['threads']} threads", fontsize=10)
    ax.legend(fontsize=8)
