"""CPU latency of the ResNet-50 example in the runtime the cpu and serverless profiles serve (pytorch-2.6.0: its
Python 3.12 and torch 2.6.0, not this venv's): eager vs each recipe as served vs ONNX Runtime; and each form's cold start.

Everything runs with 2 intra-op threads (torch.set_num_threads(2); ORT intra_op_num_threads=2), on the same input,
in one process of the runtime's Python (benchmarks/latency_runtime.py), interleaved round by round (one untimed call
per variant and round absorbs the switch from the previous variant, then timed calls). Each form is built and loaded
as the build and the handler do it: TorchScript through torch.jit.save/load and `served_form` ("optimized": frozen
at build, optimize_for_inference at load), recipe aoti compiled by AOTInductor in the runtime's torch and loaded
with aoti_load_package. ORT runs the eager model (same weights) exported here with torch.onnx.export (dynamo
exporter, dynamic batch); ONNX Runtime is installed for the runtime's Python into the work directory, outside its venv.

Cold start: per form, fresh processes of the runtime's Python time the load as served plus the first request (torch
already imported), interleaved across forms. Targets: aoti within 1.00x of ORT at batch 1 and 8. `preferred_recipes`
turns the results into what `recipe: auto` should build for the CPU profiles (config/serving_targets.py).
"""
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import REPO, Options, Progress, median, ratio, target
from benchmarks.latency_runtime import FORM_FILES, ORT, RECIPES, THREADS

NAME = "latency"
TITLE = "CPU latency in the cpu/serverless runtime's torch: eager vs recipes vs ONNX Runtime"
RUNTIME = "pytorch-2.6.0"  # the image of the cpu and serverless profiles (config/serving_targets.PROFILE_DEFAULTS)
TARGET_VS_ORT = 1.00
AUTO_CANDIDATES = ("optimized", "aoti")  # what `recipe: auto` chooses between on the CPU profiles
COLD_FORMS = (*RECIPES, ORT)
FULL = {"model": "example-resnet-50", "input_shape": [1, 3, 224, 224], "batches": [1, 8], "cold_repeats": 3}
QUICK = {"model": "example-resnet-tiny", "input_shape": [1, 3, 64, 64], "batches": [1, 8], "cold_repeats": 1}
# warm-up runs, then rounds: at least min_rounds, at most max_rounds, stopping after budget_s.
# Per round, each variant makes one untimed call (it absorbs the switch: ORT's worker threads spin on after a
# run and slowed the next variant by up to 1.5x; the other model's weights fill the caches), then timed ones.
# Rounds disturbed by other processes are set aside and replaced, up to give_up_s (see common.interleaved).
ROUNDS = {1: dict(warmup=3, switch_runs=1, timed_runs=2, min_rounds=12, max_rounds=40, budget_s=30.0, give_up_s=60.0),
          8: dict(warmup=2, switch_runs=1, timed_runs=1, min_rounds=6, max_rounds=15, budget_s=60.0, give_up_s=120.0)}
QUICK_ROUNDS = dict(warmup=2, switch_runs=1, timed_runs=1, min_rounds=3, max_rounds=5, budget_s=1.0, give_up_s=0.0)
PEER_REQUIREMENTS = REPO / "requirements-bench.txt"
PEER_PACKAGES = ("onnxruntime", "flatbuffers")  # and protobuf from constraints.txt: what ORT needs beyond the runtime's venv


def run(options: Options, progress: Progress) -> dict:
    import torch

    from model_artifacts.example_models import build_example_model
    from runtimes import RUNTIMES

    runtime = RUNTIMES[RUNTIME]
    python = runtime.require()
    sizes = QUICK if options.quick else FULL
    peer = _onnxruntime_for(runtime, options.work_dir, progress)
    options.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-latency-", dir=options.work_dir) as tmp:
        work = Path(tmp)
        progress.say(f"building {sizes['model']} (input {sizes['input_shape']}); its weights go to the runtime, its ONNX export to ORT")
        eager = build_example_model(sizes["model"]).eval()
        torch.save(eager.state_dict(), work / "weights.pth")
        _export_onnx(eager, torch.zeros(sizes["input_shape"]), work / FORM_FILES[ORT], progress)
        job = {"model": sizes["model"], "input_shape": sizes["input_shape"], "batches": sizes["batches"], "weights": str(work / "weights.pth"),
               "work_dir": str(work), "verbose": options.verbose,
               "rounds": {str(b): QUICK_ROUNDS if options.quick else ROUNDS[b] for b in sizes["batches"]}}
        (work / "job.json").write_text(json.dumps(job))
        env = _runtime_env(peer)
        progress.say(f"measuring in the {RUNTIME} runtime's Python ({python})")
        measured = _result(subprocess.run([str(python), "-m", "benchmarks.latency_runtime", "steady", str(work / "job.json")],
                                          cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, check=True))
        cold = _cold_starts(python, env, measured["files"], sizes, progress)

    batches = measured["batches"]
    targets = []
    for batch, stats in batches.items():
        for stat in stats.values():
            stat["vs_eager"] = ratio(stat["median_ms"], stats["eager"]["median_ms"])
            stat["vs_onnxruntime"] = ratio(stat["median_ms"], stats[ORT]["median_ms"])
        targets.append(target(f"batch {batch}: aoti median / ONNX Runtime median ({RUNTIME})", stats["aoti"]["vs_onnxruntime"],
                              TARGET_VS_ORT, short=f"batch {batch} aoti / ORT"))
        targets.append(target(f"batch {batch}: optimized median / ONNX Runtime median ({RUNTIME})", stats["optimized"]["vs_onnxruntime"],
                              None, short=f"batch {batch} optimized / ORT"))
    section = {"model": sizes["model"], "input_shape": sizes["input_shape"], "threads": THREADS, "runtime": RUNTIME,
               "torch": measured["torch"], "python": measured["python"], "batches": batches, "rounds": measured["rounds"], "cold": cold}
    preferred = preferred_recipes(section)
    notes = [f"{sizes['model']}, input {sizes['input_shape'][1:]} per image; {THREADS} intra-op threads for torch and ONNX Runtime; "
             f"measured in the {RUNTIME} runtime: Python {measured['python']}, torch {measured['torch']}",
             "TorchScript traced/scripted with batch 1 and run at every batch size; aoti and ONNX exported with a dynamic batch",
             "order rotates every round; per round each variant makes 1 untimed run (absorbs the switch from the previous "
             "variant), then timed runs; rounds during which other processes used more than 0.25 cores are set aside: "
             + "; ".join(f"batch {b}: {r['described']}" for b, r in measured["rounds"].items()),
             f"cold start: load as served + first request at batch 1 in a fresh process (torch imported first), median of {sizes['cold_repeats']}",
             "recipe: auto on the CPU profiles, from these numbers: " + ", ".join(f"{p} -> {r}" for p, r in preferred.items())
             + " (cpu: the lower geometric mean of the batch medians; serverless: the shorter cold start)"]
    return {**section, "preferred_recipes": preferred, "targets": targets, "notes": notes}


def preferred_recipes(section: dict) -> dict:
    """What `recipe: auto` should build for each CPU profile, by these measurements: cpu serves warm, so steady-state
    latency decides (the geometric mean over the batch sizes); a serverless endpoint loads the model on every cold
    start, so the shorter cold start (load + first request) decides."""
    def steady(recipe):
        return math.exp(sum(math.log(stats[recipe]["median_ms"]) for stats in section["batches"].values()) / len(section["batches"]))

    def cold(recipe):
        return section["cold"][recipe]["cold_start_median_s"]

    return {"cpu": min(AUTO_CANDIDATES, key=steady), "serverless": min(AUTO_CANDIDATES, key=cold)}


def _cold_starts(python: Path, env: dict, files: dict, sizes: dict, progress: Progress) -> dict:
    """Fresh processes, the forms interleaved repeat by repeat: load as served + the first request."""
    samples = {form: [] for form in COLD_FORMS}
    for repeat in range(sizes["cold_repeats"]):
        progress.say(f"cold start {repeat + 1}/{sizes['cold_repeats']}: " + ", ".join(COLD_FORMS))
        for form in COLD_FORMS:
            samples[form].append(_result(subprocess.run(
                [str(python), "-m", "benchmarks.latency_runtime", "cold", form, files[form], json.dumps(sizes["input_shape"])],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)))
    cold = {}
    for form, runs in samples.items():
        starts = [run["load_s"] + run["first_request_s"] for run in runs]
        cold[form] = {"load_median_s": median([r["load_s"] for r in runs]), "first_request_median_s": median([r["first_request_s"] for r in runs]),
                      "cold_start_median_s": median(starts), "runs": runs}
    progress.say("cold start (load + first request): " + ", ".join(f"{f} {c['cold_start_median_s']:.2f}s" for f, c in cold.items()))
    return cold


def _result(done: subprocess.CompletedProcess) -> dict:
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"the runtime's measuring process printed no result:\n{done.stdout[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def _runtime_env(peer: Path) -> dict:
    """The runtime's Python sees the repository and ONNX Runtime, nothing of this venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(peer)]), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    return env


def _onnxruntime_for(runtime, work_dir: Path, progress: Progress) -> Path:
    """ONNX Runtime (the pins of requirements-bench.txt and constraints.txt) for the runtime's Python, in a directory
    of its own that only the benchmark puts on PYTHONPATH: the runtime's venv stays the image's."""
    pins = _pins(PEER_REQUIREMENTS, PEER_PACKAGES) + _pins(REPO / "constraints.txt", ("protobuf",))
    target_dir = work_dir / f"onnxruntime-for-{runtime.name}"
    marker = target_dir / ".installed"
    if marker.is_file() and marker.read_text() == "\n".join(pins):
        return target_dir
    progress.say(f"installing {', '.join(pins)} for the {runtime.name} runtime's Python into {target_dir}")
    subprocess.run([str(runtime.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--upgrade", "--target", str(target_dir), *pins], check=True)
    marker.write_text("\n".join(pins))
    return target_dir


def _pins(requirements: Path, names) -> list:
    pins = {line.split("==")[0].strip().lower(): line.strip() for line in requirements.read_text().splitlines() if "==" in line and not line.startswith("#")}
    return [pins[name] for name in names]


def _export_onnx(eager, example, path: Path, progress: Progress) -> None:
    import contextlib
    import io
    import logging
    import warnings

    import torch

    progress.say("exporting the eager model to ONNX (torch.onnx.export, dynamo exporter, dynamic batch)")
    batch = torch.export.Dim("batch", min=1, max=64)
    exporter_log = io.StringIO()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with contextlib.redirect_stdout(exporter_log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(eager, (example,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), external_data=False)
    finally:
        quiet.setLevel(level)


# ------------------------------------------------------------------------------------ report

COLUMNS = ["batch", "variant", "median ms", "p90 ms", "n", "vs eager", "vs ONNX Runtime"]


def table(section: dict):
    rows = []
    for batch, stats in section["batches"].items():
        for name, stat in stats.items():
            rows.append([batch, _label(name), f"{stat['median_ms']:.1f}", f"{stat['p90_ms']:.1f}", str(stat["n"]),
                         f"{stat['vs_eager']:.2f}x", f"{stat['vs_onnxruntime']:.2f}x" if "vs_onnxruntime" in stat else "—"])
    cold = section.get("cold") or {}
    for name, stat in cold.items():  # the cold start: load as served + first request, in a fresh process
        rows.append(["cold start", _label(name), f"{stat['cold_start_median_s'] * 1000:.0f}", "—", str(len(stat["runs"])), "—",
                     f"{stat['cold_start_median_s'] / cold[ORT]['cold_start_median_s']:.2f}x"])
    return COLUMNS, rows


def _label(name: str) -> str:
    return {"optimized": "optimized (served form)", "aoti": "aoti (AOTInductor .pt2)", ORT: "ONNX Runtime"}.get(name, name)


def plot(ax, section: dict) -> None:
    batches = list(section["batches"])
    names = list(section["batches"][batches[0]])
    width = 0.8 / len(batches)
    for index, batch in enumerate(batches):
        per_image = [section["batches"][batch][name]["median_ms"] / int(batch) for name in names]
        positions = [i + (index - (len(batches) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(positions, per_image, width, label=f"batch {batch}")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    short = {"optimized": "optimized\n(served)", "aoti": "aoti\n(.pt2)", ORT: "ONNX\nRuntime"}
    ax.set_xticks(range(len(names)), [short.get(n, n) for n in names], fontsize=8)
    ax.set_ylabel("median ms per image")
    ax.set_title(f"CPU latency, {section['model']}, {section['threads']} threads, torch {section.get('torch', '')}", fontsize=10)
    ax.legend(fontsize=8)
