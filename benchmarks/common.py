"""What every benchmark shares: statistics, interleaved timing, targets, the machine, progress, contention."""
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = REPO / "build" / "bench"


# ------------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summarize(seconds: Sequence[float]) -> dict:
    """Samples in seconds -> n, median, p90, p99, min, max in milliseconds (the raw samples are kept too)."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "median_ms": median(ms),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": [round(v, 3) for v in ms],
    }


def ratio(numerator: float, denominator: float) -> float:
    if denominator <= 0:
        raise ValueError(f"ratio with a non-positive denominator ({denominator})")
    return numerator / denominator


def target(what: str, value: float, limit: Optional[float], better: str = "lower", short: Optional[str] = None,
           unit: str = "x") -> dict:
    """A measured value and its target: PASS when value <= limit (better="lower") or >= limit (better="higher").

    The value is a ratio ("x") or, with unit="ms", milliseconds; it is kept under "ratio" either way, and
    `short` labels it on the chart."""
    if limit is None:
        verdict = None
    elif better == "lower":
        verdict = "PASS" if value <= limit else "MISS"
    elif better == "higher":
        verdict = "PASS" if value >= limit else "MISS"
    else:
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {unit!r}")
    return {"what": what, "short": short or what, "ratio": value, "target": limit, "better": better, "verdict": verdict, "unit": unit}


UNITS = ("x", "ms", "s", "%")


# ------------------------------------------------------------------------------------ timing


MAX_OTHER_CORES = 0.25  # a round during which other processes used more CPU than this is set aside


@dataclass(frozen=True)
class Elapsed:
    """What a candidate that times itself returns (in another process, say): its own seconds, which
    interleaved() then records instead of its own clock around the call, so the transport is not counted."""

    seconds: float


@dataclass
class Timings:
    """Seconds per candidate from the rounds used, and how many rounds other processes disturbed."""

    samples: Dict[str, List[float]]
    rounds: int  # run
    contended: int  # during which other processes used more than MAX_OTHER_CORES
    used: int  # rounds whose samples are in `samples`: the quiet ones, or all when too few were quiet

    def record(self) -> dict:
        return {"rounds_run": self.rounds, "rounds_contended": self.contended, "rounds_used": self.used,
                "max_other_cores": MAX_OTHER_CORES}

    def describe(self) -> str:
        if not self.contended:
            return f"{self.used} rounds, all quiet"
        if self.used == self.rounds:
            return f"{self.rounds} rounds, all used although {self.contended} were contended (too few quiet ones in time)"
        return f"{self.used} quiet rounds used, {self.contended} contended set aside"


def interleaved(
    candidates: Dict[str, Callable[[], object]],
    *,
    warmup: int,
    min_rounds: int,
    max_rounds: int,
    budget_s: float,
    give_up_s: Optional[float] = None,
    settle_s: float = 0.0,
    switch_runs: int = 0,
    timed_runs: int = 1,
    monitor: Optional[Callable[[], "CpuMonitor"]] = None,
    progress: Optional["Progress"] = None,
    label: str = "",
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> Timings:
    """Time every candidate once per round, in a rotating order, until max_rounds, or min_rounds and budget_s.

    Round-robin instead of one candidate after the other: a slowdown from something else on the
    machine (or thermal drift) then hits every candidate alike, and the ratios stay fair. With a
    `monitor` (a CpuMonitor factory), a round during which other processes used more than
    MAX_OTHER_CORES is set aside whole, and more rounds are run instead, up to give_up_s (default:
    twice the budget); if fewer than min_rounds were quiet by then, every round is kept and the
    result says so. On 2 cores a third busy process slows a 2-thread forward several times over,
    so one such round would otherwise decide a median of a few.

    In each round a candidate first makes `switch_runs` untimed calls, then `timed_runs` timed
    ones: the untimed calls absorb the switch from the previous candidate (ONNX Runtime's worker
    threads keep spinning after a run; the other model's weights fill the caches), so the timed
    ones show each candidate in the steady state a server running one model is in. `settle_s`
    pauses (untimed) after every call. A candidate that returns an Elapsed is recorded with its seconds.
    """
    give_up_s = give_up_s if give_up_s is not None else 2 * budget_s
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
            if settle_s:
                sleep(settle_s)
    kept: Dict[str, List[float]] = {name: [] for name in names}
    busy: Dict[str, List[float]] = {name: [] for name in names}
    started = last_report = clock()
    rounds = dropped = 0

    def go_on() -> bool:
        elapsed, quiet = clock() - started, rounds - dropped
        if quiet >= max_rounds:
            return False
        if quiet < min_rounds:
            return elapsed < give_up_s or rounds < min_rounds
        return elapsed < budget_s

    while go_on():
        watch = monitor().start() if monitor else None
        shift = rounds % len(names)
        this_round = {}
        for name in names[shift:] + names[:shift]:
            for index in range(switch_runs + timed_runs):
                begin = clock()
                result = candidates[name]()
                seconds = result.seconds if isinstance(result, Elapsed) else clock() - begin
                if index >= switch_runs:
                    this_round.setdefault(name, []).append(seconds)
                if settle_s:
                    sleep(settle_s)
        other = watch.other_cores() if watch else None
        into = busy if other is not None and other > MAX_OTHER_CORES else kept
        dropped += into is busy
        for name, seconds in this_round.items():
            into[name].extend(seconds)
        rounds += 1
        if progress and clock() - last_report >= 10:
            last_report = clock()
            current = ", ".join(f"{n} {median(s) * 1000:.1f} ms" for n, s in kept.items() if s)
            progress.say(f"{label}round {rounds} ({dropped} set aside as contended): medians so far {current}")
    if rounds - dropped < min_rounds:
        return Timings({name: kept[name] + busy[name] for name in names}, rounds, dropped, rounds)
    return Timings(kept, rounds, dropped, rounds - dropped)


# ------------------------------------------------------------------------------------ the machine


def package_version(name: str) -> Optional[str]:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cdk_cli_version() -> Optional[str]:
    import json

    manifest = REPO / "node_modules" / "aws-cdk" / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.is_file() else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib(meminfo: Path = Path("/proc/meminfo")) -> Optional[float]:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def environment() -> dict:
    torch_version = package_version("torch")
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch_version.split("+")[0] if torch_version else None,
        "onnxruntime": package_version("onnxruntime"),
        "aws_cdk_lib": package_version("aws-cdk-lib"),
        "cdk_cli": cdk_cli_version(),
    }


# ------------------------------------------------------------------------------------ progress


class Progress:
    """One line per step on stderr: `[bench latency 12.3s] batch 8: round 5/20 ...`."""

    def __init__(self, name: str, stream=None, enabled: bool = True):
        self.name, self.stream, self.enabled = name, stream or sys.stderr, enabled
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        if self.enabled:
            print(f"[bench {self.name} {time.perf_counter() - self.started:5.1f}s] {message}", file=self.stream, flush=True)


# ------------------------------------------------------------------------------------ contention


def _system_busy_seconds(stat: Path = Path("/proc/stat")) -> Optional[float]:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq), or None off Linux."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds_of(processes: Iterable) -> float:
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class CpuMonitor:
    """How much CPU *other* processes used while a benchmark ran (the machine is shared): in cores.

    Ours = this process, its descendants (live ones, and finished ones through os.times), and
    `extra_pids()` (e.g. the TorchServe process group, whose Java frontend is not our child).
    Everything else busy on the machine is contention, recorded with the results.
    """

    extra_pids: Callable[[], Iterable[int]] = lambda: ()
    _start: Optional[tuple] = field(default=None, repr=False)

    def _ours(self) -> float:
        import psutil

        me = psutil.Process()
        seen = {me.pid}
        processes = []
        for process in me.children(recursive=True):
            seen.add(process.pid)
            processes.append(process)
        for pid in self.extra_pids():
            if pid not in seen:
                seen.add(pid)
                try:
                    processes.append(psutil.Process(pid))
                except psutil.Error:
                    continue
        own = os.times()
        return own.user + own.system + own.children_user + own.children_system + _cpu_seconds_of(processes)

    def sample(self) -> Optional[tuple]:
        busy = _system_busy_seconds()
        return None if busy is None else (time.monotonic(), busy, self._ours())

    def start(self) -> "CpuMonitor":
        self._start = self.sample()
        return self

    def other_cores(self) -> Optional[float]:
        """Average cores used by other processes since start() (0 = a quiet machine)."""
        end = self.sample()
        if self._start is None or end is None:
            return None
        wall = end[0] - self._start[0]
        if wall <= 0:
            return None
        foreign = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return round(max(0.0, foreign) / wall, 2)


def wait_until_quiet(max_wait_s: float, progress: Progress, threshold_cores: float = 0.3, window_s: float = 3.0) -> dict:
    """Wait (bounded) until other processes use less than threshold_cores; say how long and how busy."""
    started = time.monotonic()
    load = None
    while True:
        monitor = CpuMonitor().start()
        time.sleep(window_s)
        load = monitor.other_cores()
        waited = time.monotonic() - started
        if load is None or load < threshold_cores:
            return {"waited_s": round(waited, 1), "other_cores_before": load, "quiet_at_start": True}
        if waited >= max_wait_s:
            progress.say(f"machine still busy ({load:.2f} cores used by other processes) after {waited:.0f}s; measuring anyway")
            return {"waited_s": round(waited, 1), "other_cores_before": load, "quiet_at_start": False}
        progress.say(f"other processes use {load:.2f} cores; waiting for a quiet machine ({waited:.0f}/{max_wait_s:.0f}s)")


# ------------------------------------------------------------------------------------ model servers


def model_server_pids(kind: str = "torchserve") -> List[int]:
    """Java frontends of that kind ("torchserve" or "mms") running anywhere on this machine."""
    from local_serving.server import running_model_server_pids

    return running_model_server_pids(kind)


def wait_for_no_model_server(max_wait_s: float, progress: Progress, kind: str = "torchserve", poll_s: float = 5.0) -> float:
    """Only one model server of a kind may run on the machine (the toolkit refuses a second): poll until none
    does; seconds waited."""
    started = time.monotonic()
    while True:
        running = model_server_pids(kind)
        waited = time.monotonic() - started
        if not running:
            return round(waited, 1)
        if waited >= max_wait_s:
            raise RuntimeError(f"another {kind} model server (pid {running}) still runs after {waited:.0f}s; "
                               "only one may run on this machine: try again when it has stopped")
        progress.say(f"another {kind} model server runs (pid {', '.join(map(str, running))}); waiting ({waited:.0f}/{max_wait_s:.0f}s)")
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------ options


@dataclass
class Options:
    quick: bool = False
    work_dir: Path = DEFAULT_WORK_DIR
    quiet_wait_s: float = 30.0
    server_wait_s: float = 600.0
    verbose: bool = True
