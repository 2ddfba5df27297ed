"""Serving overhead per runtime: what a request spends outside the forward pass, in the runtime the endpoint runs.

| runtime           | the image it mirrors                    | model server             |
|-------------------|-----------------------------------------|--------------------------|
| pytorch-2.6.0     | pytorch-inference:2.6.0 (the successors) | TorchServe 0.12.0        |
| eia-pytorch-1.5.1 | pytorch-inference-eia:1.5.1 (EIA)        | multi-model-server 1.1.2 |

The model is a probe: the example-resnet-tiny layout, built for the runtime (its recipe, in its venv) at the
ResNet-50 input size. The request (a 602 KB npy body, 1x3x224x224 float32, batch 1), its decoding and the JSON
top-5 answer are the real ones, while the forward takes about 2 ms, so the overhead is measured to a tenth of a
millisecond; a ResNet-50 forward varies by more than that from one call to the next.

The archive is served by LocalEndpoint with the classifier's container environment (its workers and threads,
config/workers.py) and called over one keep-alive connection (local_serving.client.Connection), as a load
balancer calls a container. The baseline is the same archive in the same runtime: a process of the runtime's
Python (benchmarks/in_runtime.py) loads it with the archive's own model_fn and times the handler's forward with
the worker's threads, and the handler's whole share (input_fn + predict_fn + output_fn). The three are measured
in interleaved rounds while the server is up, after the server's Java has been warmed by WARMUP_REQUESTS calls.
Overhead = served p50 - forward p50. Target: at most 3 ms per runtime.
"""
import os
import subprocess
import time
from pathlib import Path
from typing import Dict

from benchmarks.build import convert_cli, run_build_cli
from benchmarks.common import (REPO, CpuMonitor, Elapsed, Options, Progress, interleaved, median, summarize, target,
                               wait_for_no_model_server)

NAME = "serving"
TITLE = "Serving overhead per runtime: served p50 - in-runtime forward p50"
TARGET_OVERHEAD_MS = 3.0
# runtime -> the recipe its artifacts are built with (config/serving_targets.py picks the same ones).
RUNTIMES = {"pytorch-2.6.0": "optimized", "eia-pytorch-1.5.1": "eia-1.5"}
PROBE_MODEL, PROBE_INPUT_SHAPE = "example-resnet-tiny", (1, 3, 224, 224)
FORWARD, HANDLER, SERVED = "in-runtime forward", "in-runtime handler", "served, npy body"
THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The Java frontends compile their request path after a few thousand calls; before that, p50 is 1-2 ms higher.
WARMUP_REQUESTS, QUICK_WARMUP_REQUESTS = 3000, 20
ROUNDS = dict(warmup=20, switch_runs=1, timed_runs=5, min_rounds=100, max_rounds=400, budget_s=30.0, give_up_s=60.0)
QUICK_ROUNDS = dict(warmup=2, switch_runs=1, timed_runs=1, min_rounds=5, max_rounds=10, budget_s=2.0, give_up_s=0.0)


class InRuntimeBaseline:
    """The archive in the runtime's own Python (benchmarks/in_runtime.py); call(kind) -> Elapsed, timed there."""

    def __init__(self, runtime, model_dir: Path, body_file: Path, container_env: Dict[str, str], log_file: Path):
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON") and key != "VIRTUAL_ENV"}
        env.update({key: container_env[key] for key in THREAD_SETTINGS if key in container_env})
        self.log_file = log_file
        with open(log_file, "wb") as log:
            # -I: not this repository's benchmarks/ on sys.path, nor this venv's settings; only the archive's code/.
            self.process = subprocess.Popen([str(runtime.require()), "-I", str(Path(__file__).with_name("in_runtime.py")),
                                             str(model_dir), str(body_file)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        if self.process.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"the in-runtime baseline ({runtime.name}) did not start:\n{log_file.read_text()[-3000:]}")

    def call(self, kind: str) -> Elapsed:
        self.process.stdin.write(kind + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-runtime baseline stopped:\n{self.log_file.read_text()[-3000:]}")
        return Elapsed(float(line))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def probe_artifact(runtime_name: str, options: Options, progress: Progress) -> Path:
    """The probe model's model.tar.gz for a runtime, built in that runtime's venv (a no-op when up to date)."""
    from runtimes import RUNTIMES as ALL_RUNTIMES

    out_dir = options.work_dir / f"serving-probe-{runtime_name}"
    command = convert_cli(PROBE_MODEL, PROBE_INPUT_SHAPE, RUNTIMES[runtime_name], out_dir,
                          "--runtime-torch", ALL_RUNTIMES[runtime_name].framework_version)
    progress.say(f"probe artifact for {runtime_name}: {' '.join(command[1:])}")
    run_build_cli(command)
    return out_dir


def run(options: Options, progress: Progress) -> dict:
    import numpy as np

    from config import load_config
    from config.container import container_environment
    from local_serving.client import Connection, npy
    from local_serving.server import LocalEndpoint, installed_model_server
    from runtimes import RUNTIMES as ALL_RUNTIMES

    config = load_config(REPO / "config")
    environment = container_environment(next(d for d in config.environments[0].models if d.name == "image-classifier"))
    body = npy(np.random.default_rng(0).standard_normal(PROBE_INPUT_SHAPE).astype(np.float32))
    body_file = options.work_dir / "serving-probe-body.npy"
    body_file.write_bytes(body)
    plan = QUICK_ROUNDS if options.quick else ROUNDS
    warmup_requests = QUICK_WARMUP_REQUESTS if options.quick else WARMUP_REQUESTS
    monitor = CpuMonitor().start()
    results, targets = {}, []
    for name in RUNTIMES:
        runtime = ALL_RUNTIMES[name]
        artifact_dir = probe_artifact(name, options, progress)
        waited = wait_for_no_model_server(options.server_wait_s, progress, runtime.model_server)
        # A short directory: the servers' worker sockets live in it, and AF_UNIX paths end at 108 bytes.
        endpoint = LocalEndpoint(artifact_dir / "model.tar.gz", PROBE_INPUT_SHAPE, options.work_dir / f"ep-{name}", environment, runtime)
        server = installed_model_server(runtime)
        progress.say(f"starting {name} ({server}, {environment['SAGEMAKER_MODEL_SERVER_WORKERS']} workers x "
                     f"{environment['OMP_NUM_THREADS']} thread)")
        started = time.perf_counter()
        with endpoint, Connection(endpoint.url, timeout=60) as connection:
            startup_s = time.perf_counter() - started
            baseline = InRuntimeBaseline(runtime, endpoint.work_dir / "model", body_file, environment,
                                         options.work_dir / f"serving-baseline-{name}.log")
            try:
                def served():
                    answer = connection.invoke(body, "application/x-npy", "application/json")
                    if answer.status != 200:
                        raise RuntimeError(f"{name}: status {answer.status}: {answer.body[:500]!r}")

                progress.say(f"ready in {startup_s:.0f}s; warming its Java up with {warmup_requests} requests")
                for _ in range(warmup_requests):
                    served()
                progress.say(f"{plan['min_rounds']}-{plan['max_rounds']} rounds of (forward, handler, served)")
                timings = interleaved({FORWARD: lambda: baseline.call("forward"), HANDLER: lambda: baseline.call("handler"),
                                       SERVED: served},
                                      monitor=lambda: CpuMonitor(extra_pids=endpoint.pids), progress=progress, label=f"{name}: ",
                                      **plan)
            finally:
                baseline.close()
            # The server's own account of the rounds' requests: its worker's time per request.
            worker_ms = endpoint.prediction_times_ms()[-timings.rounds * (plan["switch_runs"] + plan["timed_runs"]):]
        stats = {kind: summarize(seconds) for kind, seconds in timings.samples.items()}
        overhead = stats[SERVED]["median_ms"] - stats[FORWARD]["median_ms"]
        results[name] = {
            "image": runtime.image,
            "model_server": server,
            "python": runtime.python_version,
            "workers": int(environment["SAGEMAKER_MODEL_SERVER_WORKERS"]),
            "threads_per_worker": int(environment["OMP_NUM_THREADS"]),
            "server_startup_s": startup_s,
            "waited_for_another_server_s": waited,
            "stats": stats,
            "overhead_ms": overhead,
            "handler_ms": stats[HANDLER]["median_ms"] - stats[FORWARD]["median_ms"],
            "breakdown_ms": breakdown(stats, worker_ms),
            "rounds": {**timings.record(), "described": timings.describe()},
        }
        targets.append(target(f"{name}: served p50 - forward p50", overhead, TARGET_OVERHEAD_MS, unit="ms",
                              short=f"{name} overhead"))
        progress.say(f"{name}: overhead {overhead:.2f} ms (handler {results[name]['handler_ms']:.2f} ms)")
    return {
        "model": f"{PROBE_MODEL} at {PROBE_INPUT_SHAPE[2]}x{PROBE_INPUT_SHAPE[3]} (probe)",
        "input_shape": list(PROBE_INPUT_SHAPE),
        "runtimes": results,
        "other_cores": monitor.other_cores(),
        "targets": targets,
        "notes": [f"{PROBE_MODEL} built per runtime (its recipe, in its venv) at input {list(PROBE_INPUT_SHAPE)}: the request "
                  f"({len(body) // 1000} KB npy, batch 1) and the JSON top-5 answer of ResNet-50, a forward of about 2 ms",
                  "served: one keep-alive HTTP connection to 127.0.0.1, the classifier's container environment "
                  f"({environment['SAGEMAKER_MODEL_SERVER_WORKERS']} workers x {environment['OMP_NUM_THREADS']} thread), "
                  f"after {warmup_requests} warm-up requests",
                  "in-runtime: the same archive loaded by its own model_fn in the runtime's Python, with the worker's threads "
                  "(benchmarks/in_runtime.py); handler = input_fn + predict_fn + output_fn",
                  "overhead breakdown (p50 differences): served - the server's own PredictionTime of the same requests "
                  "(its metrics log) = HTTP, Java frontend and the hop to the worker; PredictionTime - in-runtime handler = "
                  "the server's Python worker and the toolkit; handler - forward = the handler's share",
                  f"interleaved rounds of the three, each 1 untimed + {plan['timed_runs']} timed calls; rounds during which "
                  "other processes used more than 0.25 cores are set aside: "
                  + "; ".join(f"{n}: {r['rounds']['described']}" for n, r in results.items())],
    }


def breakdown(stats: dict, worker_ms) -> dict:
    """Where the overhead goes, as differences of p50s: the server's Java frontend with the HTTP exchange and the
    hop to its worker (served - the worker's PredictionTime), the server's Python worker and the SageMaker toolkit
    around the handler (PredictionTime - in-runtime handler), and the handler's own decoding and answer."""
    parts = {}
    if worker_ms:
        worker = median(worker_ms)
        parts[OUTSIDE_WORKER] = stats[SERVED]["median_ms"] - worker
        parts[WORKER_AND_TOOLKIT] = worker - stats[HANDLER]["median_ms"]
    parts[HANDLER_SHARE] = stats[HANDLER]["median_ms"] - stats[FORWARD]["median_ms"]
    return parts


OUTSIDE_WORKER = "HTTP, Java frontend, hop to the worker"
WORKER_AND_TOOLKIT = "model server's Python worker + SageMaker toolkit"
HANDLER_SHARE = "handler: decode, checks, JSON answer"


# ------------------------------------------------------------------------------------ report

COLUMNS = ["runtime", "model server", "path", "p50 ms", "p99 ms", "n", "p50 - forward ms"]


def table(section: dict):
    rows = []
    for name, result in section["runtimes"].items():
        forward = result["stats"][FORWARD]["median_ms"]
        for kind, stat in result["stats"].items():
            rows.append([name, result["model_server"], kind, f"{stat['median_ms']:.2f}", f"{stat['p99_ms']:.2f}", str(stat["n"]),
                         "" if kind == FORWARD else f"{stat['median_ms'] - forward:+.2f}"])
        for part, ms in result.get("breakdown_ms", {}).items():
            rows.append([name, result["model_server"], f"of which: {part}", f"{ms:.2f}", "", "", ""])
    return COLUMNS, rows


def plot(ax, section: dict) -> None:
    names = list(section["runtimes"])
    kinds = (FORWARD, HANDLER, SERVED)
    width = 0.8 / len(kinds)
    for index, kind in enumerate(kinds):
        values = [section["runtimes"][n]["stats"][kind]["median_ms"] for n in names]
        bars = ax.bar([p + (index - 1) * width for p in range(len(names))], values, width, label=kind)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(list(range(len(names))), names, fontsize=8)
    ax.set_ylabel("p50 ms, npy batch 1")
    ax.set_title(f"Serving overhead, {section['model']}", fontsize=10)
    ax.legend(fontsize=7)
