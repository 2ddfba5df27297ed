"""Workers x threads per worker: throughput and p99 at concurrency 1, 4 and 16 through the real serving stack.

The candidates split this machine's cores (2 here) between model-server workers and each worker's
intra-op threads: one worker with every core's thread (1x2), one single-threaded worker per core (2x1),
and what the servers do when nothing is set (2x2: one worker per core, torch's default pool of one
thread per core in each, oversubscribed). Each is served by LocalEndpoint in the runtime the artifact
was built for (pytorch-2.6.0: sagemaker-pytorch-inference 2.0 + TorchServe), with the container
environment the endpoint gets except SAGEMAKER_MODEL_SERVER_WORKERS, OMP_NUM_THREADS and MKL_NUM_THREADS,
which are the candidate's. Only one model server may run at a time, so the candidates take turns in
passes (the order reversed in the second pass, against drift); within a server, the concurrency levels
take turns round by round (rotating). A level is a closed loop: C client threads each send an npy batch-1
request (JSON top-5 answer) as soon as their last one is answered, for a fixed time; throughput counts
the answers within that time, latencies are every answer's. Rounds during which other processes used
more than 0.25 cores are set aside and replaced, within a time limit. Target: the split config/workers.py
derives for a host of this many vCPUs serves at least 0.95x the best candidate's throughput at concurrency 16.
"""
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

from benchmarks import build as build_benchmark
from benchmarks.common import (MAX_OTHER_CORES, REPO, CpuMonitor, Options, Progress, percentile, ratio, target,
                               wait_for_no_model_server, wait_until_quiet)

NAME = "concurrency"
TITLE = "Workers x threads per worker: throughput and p99 at concurrency 1, 4, 16"
CONCURRENCY = (1, 4, 16)
TARGET_VS_BEST = 0.95  # the configured auto split's req/s at the highest concurrency / the best candidate's
# Per candidate and pass: warm-up, then rounds of (every concurrency level for level_s), each after a wait of up to
# round_quiet_wait_s for a quiet machine; at least min_rounds quiet rounds, at most max_rounds. After give_up_s no more
# waiting, and every round is kept (the notes say how many were contended). The machine is shared: a 2-thread worker
# loses several times its speed to one other busy process, so one contended round would decide the table.
PLAN = dict(passes=2, warmup_s=6.0, level_s=3.0, min_rounds=1, max_rounds=2, give_up_s=90.0, round_quiet_wait_s=20.0)
QUICK_PLAN = dict(passes=1, warmup_s=1.0, level_s=0.5, min_rounds=1, max_rounds=1, give_up_s=0.0, round_quiet_wait_s=0.0)


def splits(cores: int) -> List[Tuple[int, int]]:
    """(workers, threads per worker): all threads in one worker, one thread per worker, and the servers' default."""
    return [(1, cores), (cores, 1), (cores, cores)] if cores > 1 else [(1, 1)]


def label(workers: int, threads: int) -> str:
    return f"{workers}x{threads}"


# ------------------------------------------------------------------------------------ the arithmetic


@dataclass
class Level:
    """One closed-loop run at one concurrency: every answer's latency, and how many came within the window."""

    concurrency: int
    window_s: float
    latencies_s: List[float] = field(default_factory=list)
    in_window: int = 0

    @property
    def throughput(self) -> float:
        return self.in_window / self.window_s


def closed_loop(call: Callable[[], None], concurrency: int, window_s: float,
                clock: Callable[[], float] = time.perf_counter) -> Level:
    """`concurrency` clients, each calling again as soon as its call returns, until window_s has passed.

    Throughput counts the calls that ended within the window (the queue is full from the start, and the calls
    still running at its end are not counted), latencies all of them. The first error of any client is raised."""
    level = Level(concurrency, window_s)
    lock, errors = threading.Lock(), []
    started = clock()
    deadline = started + window_s

    def client():
        try:
            while clock() < deadline:
                begin = clock()
                call()
                end = clock()
                with lock:
                    level.latencies_s.append(end - begin)
                    level.in_window += end <= deadline
        except BaseException as error:  # noqa: B902 - handed to the caller
            errors.append(error)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    if errors:
        raise errors[0]
    return level


def cell(levels: Sequence[Level]) -> dict:
    """The rounds of one (candidate, concurrency): pooled throughput (answers / time), p50 and p99 of the latencies."""
    if not levels:
        raise ValueError("no rounds to summarize")
    latencies_ms = [s * 1000 for level in levels for s in level.latencies_s]
    answered = sum(level.in_window for level in levels)
    seconds = sum(level.window_s for level in levels)
    return {
        "throughput_rps": answered / seconds,
        "throughput_per_round_rps": [round(level.throughput, 2) for level in levels],
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
        "n": len(latencies_ms),
        "rounds": len(levels),
    }


def best(cells: Dict[str, Dict[str, dict]], concurrency: int) -> str:
    """The candidate with the highest throughput at that concurrency (ties: the lower p99)."""
    return max(cells, key=lambda name: (cells[name][str(concurrency)]["throughput_rps"], -cells[name][str(concurrency)]["p99_ms"]))


def compare(cells: Dict[str, Dict[str, dict]], auto: str) -> Dict[str, Dict[str, dict]]:
    """Each cell's throughput and p99 relative to the auto split's at the same concurrency."""
    for name, by_level in cells.items():
        for level, stat in by_level.items():
            base = cells[auto][level]
            stat["throughput_vs_auto"] = ratio(stat["throughput_rps"], base["throughput_rps"])
            stat["p99_vs_auto"] = ratio(stat["p99_ms"], base["p99_ms"])
    return cells


def auto_split(vcpus: int) -> Tuple[int, int]:
    """What config/workers.py derives for a CPU host with this many vCPUs when neither key is set."""
    from config.workers import CPU_THREADS_PER_WORKER

    threads = min(CPU_THREADS_PER_WORKER, vcpus)
    return max(1, vcpus // threads), threads


# ------------------------------------------------------------------------------------ the run


def run(options: Options, progress: Progress) -> dict:
    import numpy as np

    from config import load_config
    from config.container import container_environment, worker_environment
    from local_serving.client import invoke, npy
    from local_serving.server import LocalEndpoint
    from runtimes import runtime_for

    plan = QUICK_PLAN if options.quick else PLAN
    cores = os.cpu_count() or 1
    candidates = splits(cores)
    auto = label(*auto_split(cores))
    artifact_dir = build_benchmark.ensure_artifact(options, progress)
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    input_shape = manifest["input_shape"]
    body = npy(np.random.default_rng(0).standard_normal(input_shape).astype(np.float32))
    # The endpoint's container environment (limits, timeouts, ...); the candidates replace its worker settings.
    deployment = next(d for d in load_config(REPO / "config").environments[0].models if d.name == "image-classifier")
    base_env = container_environment(deployment)
    built_for = manifest["target_runtime"]
    runtime = runtime_for(built_for["framework"], built_for["framework_version"], built_for["profile"])

    rounds: Dict[str, Dict[str, List[Level]]] = {label(*c): {str(n): [] for n in CONCURRENCY} for c in candidates}
    contended: Dict[str, int] = {label(*c): 0 for c in candidates}
    kept_busy: Dict[str, int] = {label(*c): 0 for c in candidates}
    servers: Dict[str, dict] = {}
    waited = 0.0
    others: List[float] = []  # cores other processes used during each round (the servers' own processes excluded)
    for index in range(plan["passes"]):
        order = candidates if index % 2 == 0 else candidates[::-1]
        for workers, threads in order:
            name = label(workers, threads)
            waited += wait_for_no_model_server(options.server_wait_s, progress)
            env = {**base_env, **worker_environment(workers, threads)}
            endpoint = LocalEndpoint(artifact_dir / "model.tar.gz", input_shape, options.work_dir / f"concurrency-{name}", env, runtime)
            progress.say(f"pass {index + 1}/{plan['passes']}: {name} ({workers} TorchServe worker(s) x {threads} thread(s)) starting")
            started = time.perf_counter()
            with endpoint:
                startup_s = time.perf_counter() - started
                info = servers.setdefault(name, {"startup_s": [], "workers_seen": [], "worker_threads_env": []})
                info["startup_s"].append(round(startup_s, 1))
                seen = endpoint.workers()
                info["workers_seen"].append(len(seen))
                info["worker_threads_env"].append(sorted({w.environ().get("OMP_NUM_THREADS", "unset") for w in seen}))

                def call():
                    answer = invoke(endpoint.url, body, "application/x-npy", "application/json", timeout=120)
                    if answer.status != 200:
                        raise RuntimeError(f"{name}: status {answer.status}: {answer.body[:300]!r}")

                closed_loop(call, max(CONCURRENCY), plan["warmup_s"])  # every worker loads, compiles and warms up
                progress.say(f"{name}: ready in {startup_s:.1f}s, {len(seen)} worker(s) (OMP_NUM_THREADS "
                             f"{', '.join(info['worker_threads_env'][-1])}); rounds of concurrency {CONCURRENCY}, {plan['level_s']:.1f}s each")
                quiet, tried, began = 0, 0, time.perf_counter()
                # Until max_rounds rounds are kept, or min_rounds and give_up_s have passed; after give_up_s every round is kept.
                while quiet < plan["max_rounds"] and not (quiet >= plan["min_rounds"] and time.perf_counter() - began >= plan["give_up_s"]):
                    left = plan["give_up_s"] - (time.perf_counter() - began)
                    if plan["round_quiet_wait_s"] and left > 0:
                        wait_until_quiet(min(plan["round_quiet_wait_s"], left), progress, threshold_cores=MAX_OTHER_CORES, window_s=2.0)
                    shift = tried % len(CONCURRENCY)
                    watch = CpuMonitor(extra_pids=endpoint.pids).start()
                    this_round = {n: closed_loop(call, n, plan["level_s"]) for n in CONCURRENCY[shift:] + CONCURRENCY[:shift]}
                    other = watch.other_cores()
                    tried += 1
                    if other is not None:
                        others.append(other)
                    busy = other is not None and other > MAX_OTHER_CORES
                    contended[name] += busy
                    if busy and time.perf_counter() - began < plan["give_up_s"]:
                        progress.say(f"{name}: round {tried} set aside (other processes used {other:.2f} cores)")
                        continue
                    kept_busy[name] += busy
                    quiet += 1
                    for n, level in this_round.items():
                        rounds[name][str(n)].append(level)
                    progress.say(f"{name}: round {tried}: " + ", ".join(
                        f"c{n} {level.throughput:.1f} req/s" for n, level in sorted(this_round.items())))
    # Over the rounds only: a monitor over the whole run would count each server (re-parented to init) as another process.
    other_cores = round(sum(others) / len(others), 2) if others else None

    cells = compare({name: {level: cell(levels) for level, levels in by_level.items()} for name, by_level in rounds.items()}, auto)
    top = str(max(CONCURRENCY))
    winner = best(cells, max(CONCURRENCY))
    targets = [target(f"auto split ({auto}) req/s / best split's ({winner}) req/s at concurrency {top}",
                      ratio(cells[auto][top]["throughput_rps"], cells[winner][top]["throughput_rps"]), TARGET_VS_BEST, better="higher",
                      short=f"auto {auto} req/s / best, c{top}")]
    return {
        "model": manifest["model"],
        "recipe": manifest["recipe"],
        "input_shape": input_shape,
        "runtime": runtime.name,
        "cores": cores,
        "auto_split": auto,
        "best_by_concurrency": {str(n): best(cells, n) for n in CONCURRENCY},
        "cells": cells,
        "servers": servers,
        "rounds": {"contended": contended, "kept_although_contended": kept_busy, "max_other_cores": MAX_OTHER_CORES},
        "waited_for_other_torchserve_s": waited,
        "other_cores": other_cores,
        "targets": targets,
        "notes": [
            f"{manifest['model']} ({manifest['recipe']} recipe), npy batch 1 {input_shape[1:]}, JSON top-5 answers, in the "
            f"{runtime.name} runtime (TorchServe); a new HTTP connection per request, 127.0.0.1; the clients run on the same "
            f"{cores} cores",
            f"candidates: workers x intra-op threads per worker, set through SAGEMAKER_MODEL_SERVER_WORKERS, OMP_NUM_THREADS "
            f"and MKL_NUM_THREADS; {label(cores, cores)} is what the servers run when nothing is set; {auto} is what "
            "config/workers.py derives for a CPU host of this many vCPUs",
            f"{plan['passes']} pass(es) over the candidates (a server each, started afresh; the order reversed in the second), "
            f"{plan['warmup_s']:.0f}s warm-up at concurrency {max(CONCURRENCY)}, then {plan['min_rounds']}-{plan['max_rounds']} "
            f"rounds of {plan['level_s']:.0f}s closed loops at each concurrency (order rotating), each after a wait of up to "
            f"{plan['round_quiet_wait_s']:.0f}s for a quiet machine; throughput = answers within the window / window, "
            "latencies = every answer",
            "rounds set aside as contended (other processes > 0.25 cores): "
            + ", ".join(f"{name} {count}" for name, count in contended.items())
            + ("; kept although contended (no quiet round in time): " + ", ".join(f"{n} {c}" for n, c in kept_busy.items() if c)
               if any(kept_busy.values()) else ""),
        ],
    }


# ------------------------------------------------------------------------------------ report

COLUMNS = ["workers x threads", "concurrency", "req/s", "p50 ms", "p99 ms", "n", "req/s vs auto", "p99 vs auto"]


def table(section: dict):
    rows = []
    for name, by_level in section["cells"].items():
        mark = " (auto)" if name == section["auto_split"] else ""
        for level, stat in by_level.items():
            rows.append([name + mark, level, f"{stat['throughput_rps']:.1f}", f"{stat['p50_ms']:.0f}", f"{stat['p99_ms']:.0f}",
                         str(stat["n"]), f"{stat['throughput_vs_auto']:.2f}x", f"{stat['p99_vs_auto']:.2f}x"])
    return COLUMNS, rows


def plot(ax, section: dict) -> None:
    names = list(section["cells"])
    levels = list(next(iter(section["cells"].values())))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        values = [section["cells"][name][level]["throughput_rps"] for level in levels]
        positions = [i + (index - (len(names) - 1) / 2) * width for i in range(len(levels))]
        bars = ax.bar(positions, values, width, label=name + (" (auto)" if name == section["auto_split"] else ""))
        ax.bar_label(bars, labels=[f"{v:.0f}\np99 {section['cells'][name][level]['p99_ms']:.0f}" for v, level in zip(values, levels)],
                     fontsize=6)
    top = max(stat["throughput_rps"] for by_level in section["cells"].values() for stat in by_level.values())
    ax.set_ylim(0, top * 1.35)  # room for the labels and the legend
    ax.set_xticks(range(len(levels)), [f"concurrency {level}" for level in levels], fontsize=8)
    ax.set_ylabel("requests / s (label: p99 ms)")
    ax.set_title(f"Workers x threads, {section['model']}, {section['cores']} cores", fontsize=10)
    ax.legend(fontsize=7, title="workers x threads", title_fontsize=7)
