"""Serving overhead: p50/p99 through the real local serving stack vs an in-process forward.

The model is the ResNet-50 example built with the "optimized" recipe (the same artifact the build
benchmark builds). It is served by LocalEndpoint in the pytorch-2.6.0 runtime's venv (its
sagemaker-pytorch-inference 2.0 + TorchServe, one worker, the handler in code/inference.py), called
over HTTP on 127.0.0.1 with batch 1: an npy body and a JPEG body (decoded and resized by the handler),
answered with the JSON top-5. The in-process baseline is the archive's own model.pt, loaded and put in
its served form as the handler does, with as many threads as the worker has (torch's default, the core
count). The three are measured interleaved, round by round, while the server is up. Target: p50 within
1.10x of in-process.
"""
import json
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks import build as build_benchmark
from benchmarks.common import REPO, CpuMonitor, Options, Progress, interleaved, ratio, summarize, target, wait_for_no_torchserve

NAME = "serving"
TITLE = "Serving overhead: local serving stack vs in-process forward"
TARGET_P50 = 1.10
IN_PROCESS, NPY, JPEG = "in-process forward", "HTTP, npy body", "HTTP, JPEG body"
# Per round, each path makes one untimed call (it absorbs the switch between the worker and this process), then 2 timed.
ROUNDS = dict(warmup=5, switch_runs=1, timed_runs=2, min_rounds=40, max_rounds=100, budget_s=45.0, give_up_s=90.0)
QUICK_ROUNDS = dict(warmup=2, switch_runs=1, timed_runs=1, min_rounds=5, max_rounds=10, budget_s=2.0, give_up_s=0.0)


def run(options: Options, progress: Progress) -> dict:
    import numpy as np
    import torch

    from config import load_config
    from config.container import container_environment
    from local_serving.client import example_image, invoke, npy
    from local_serving.server import LocalEndpoint
    from model_artifacts.runtime_export import served_form
    from runtimes import runtime_for

    artifact_dir = build_benchmark.ensure_artifact(options, progress)
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    input_shape = manifest["input_shape"]
    recipe = manifest["recipe"]
    array = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    bodies = {NPY: (npy(array), "application/x-npy"), JPEG: (example_image("JPEG"), "image/jpeg")}

    with tempfile.TemporaryDirectory(prefix="bench-serving-", dir=options.work_dir) as tmp:
        with tarfile.open(artifact_dir / "model.tar.gz") as archive:
            archive.extract("model.pt", tmp, filter="data")
        module = served_form(torch.jit.load(str(Path(tmp) / "model.pt"), map_location="cpu"), recipe)
    threads = torch.get_num_threads()
    tensor = torch.from_numpy(array)

    def forward():
        with torch.no_grad():
            module(tensor)

    def request(kind):
        body, content_type = bodies[kind]

        def call():
            answer = invoke(endpoint.url, body, content_type, "application/json", timeout=60)
            if answer.status != 200:
                raise RuntimeError(f"{kind}: status {answer.status}: {answer.body[:500]!r}")
        return call

    waited = wait_for_no_torchserve(options.server_wait_s, progress)
    config = load_config(REPO / "config")
    environment = container_environment(next(d for d in config.environments[0].models if d.name == "image-classifier"))
    # The runtime the artifact was built for (convert --runtime-torch 2.6.0, the cpu profile): its venv's TorchServe.
    built_for = manifest["target_runtime"]
    runtime = runtime_for(built_for["framework"], built_for["framework_version"], built_for["profile"])
    endpoint = LocalEndpoint(artifact_dir / "model.tar.gz", input_shape, options.work_dir / "serving-endpoint", environment, runtime)
    progress.say(f"starting the local serving stack ({runtime.name}: TorchServe, 1 worker) for {manifest['model']} ({recipe})")
    started = time.perf_counter()
    with endpoint:
        startup_s = time.perf_counter() - started
        plan = QUICK_ROUNDS if options.quick else ROUNDS
        progress.say(f"ready in {startup_s:.1f}s; {plan['warmup']} warm-up calls each, then "
                     f"{plan['min_rounds']}-{plan['max_rounds']} rounds of (in-process, npy, JPEG)")
        monitor = CpuMonitor(extra_pids=endpoint.pids).start()
        timings = interleaved({IN_PROCESS: forward, NPY: request(NPY), JPEG: request(JPEG)},
                              monitor=lambda: CpuMonitor(extra_pids=endpoint.pids), progress=progress, **plan)
        other_cores = monitor.other_cores()

    stats = {name: summarize(s) for name, s in timings.samples.items()}
    base = stats[IN_PROCESS]
    for name, stat in stats.items():
        stat["p50_vs_in_process"] = ratio(stat["median_ms"], base["median_ms"])
        stat["p99_vs_in_process"] = ratio(stat["p99_ms"], base["p99_ms"])
        stat["p50_overhead_ms"] = stat["median_ms"] - base["median_ms"]
    return {
        "model": manifest["model"],
        "recipe": recipe,
        "input_shape": input_shape,
        "in_process_threads": threads,
        "server_startup_s": startup_s,
        "waited_for_other_torchserve_s": waited,
        "stats": stats,
        "rounds": timings.record(),
        "other_cores": other_cores,
        "targets": [target(f"{kind}: p50 / in-process p50", stats[kind]["p50_vs_in_process"], TARGET_P50,
                           short=f"{kind.split(', ')[1]} p50 / in-process") for kind in (NPY, JPEG)],
        "notes": [f"{manifest['model']} ({recipe} recipe, served form), batch 1, input {input_shape[1:]}; JPEG is 320x240, "
                  "resized by the handler; answers are JSON top-5",
                  f"in-process: torch.jit.load + served_form of the archive's model.pt, {threads} threads (the worker's default)",
                  "HTTP: a new connection per request (urllib), 127.0.0.1, one TorchServe worker",
                  f"interleaved rounds of the three, each 1 untimed + {plan['timed_runs']} timed calls; rounds during which other "
                  "processes used more than 0.25 cores are set aside: "
                  f"{timings.describe()}"],
    }


# ------------------------------------------------------------------------------------ report

COLUMNS = ["path", "p50 ms", "p99 ms", "n", "p50 vs in-process", "p99 vs in-process", "p50 overhead ms"]


def table(section: dict):
    rows = []
    for name, stat in section["stats"].items():
        rows.append([name, f"{stat['median_ms']:.1f}", f"{stat['p99_ms']:.1f}", str(stat["n"]),
                     f"{stat['p50_vs_in_process']:.2f}x", f"{stat['p99_vs_in_process']:.2f}x", f"{stat['p50_overhead_ms']:+.1f}"])
    return COLUMNS, rows


def plot(ax, section: dict) -> None:
    names = list(section["stats"])
    p50 = [section["stats"][n]["median_ms"] for n in names]
    p99 = [section["stats"][n]["p99_ms"] for n in names]
    positions = range(len(names))
    for offset, values, label in ((-0.2, p50, "p50"), (0.2, p99, "p99")):
        bars = ax.bar([p + offset for p in positions], values, 0.4, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(list(positions), [n.replace(", ", "\n") for n in names], fontsize=8)
    ax.set_ylabel("ms, batch 1")
    ax.set_title(f"Serving overhead, {section['model']}", fontsize=10)
    ax.legend(fontsize=8)
