"""Soak: the served endpoint under 16 concurrent clients for a minute, valid requests mixed with every bad one.

What `make serve` runs for the configured profile (EIA PyTorch 1.5.1: multi-model-server 1.1.2 and the 1.5 toolkit,
Python 3.6), with two workers of one thread each, as on the 2-vCPU ml.m5.large host: so this is also the
two-worker test. Loopback only, bounded by time and by request count. It passes when:

- no answer is a 5xx, every bad request gets its own 4xx status and every valid one a 200;
- both workers served (each used CPU time) and neither died or was replaced;
- no worker's resident memory grew by more than 10 % between the end of the warm-up and the end;
- the p99 latency of the valid requests stays under P99_BOUND_S.
"""
import itertools
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Dict, List

import psutil
import pytest

from local_serving.client import invoke
from tests.payloads import bad_requests, limits_of, request_bodies

pytestmark = pytest.mark.slow

CASE = "eia-1.5.1"  # the example config's profile
CLIENTS = 16
DURATION_S = 60.0
WARM_UP_S = 10.0
MAX_REQUESTS = 20000  # a bound on the count too, should the tiny model answer faster than expected
WORKERS = 2
RSS_GROWTH = 0.10
# 16 clients queue behind 2 workers on 2 cores, with 5 MiB bodies among the bad requests. Measured here (2026-11-29,
# other work running): p50 60 ms, p99 215 ms at ~230 requests/s; the bound leaves room for a busier CI machine.
P99_BOUND_S = 2.0
VALID_PER_BAD = 3


@dataclass(frozen=True)
class Outcome:
    name: str
    expected: int
    status: int
    seconds: float
    at: float


def _mix(limits: Dict[str, int]):
    valid = [(r.name, r.body, r.content_type, None, 200) for r in request_bodies()]
    bad = [(b.name, b.body, b.content_type, b.accept, b.status) for b in bad_requests(limits)]
    # Every bad request in turn, VALID_PER_BAD valid ones between them.
    mix = []
    valid_cycle = itertools.cycle(valid)
    for request in bad:
        mix.extend(next(valid_cycle) for _ in range(VALID_PER_BAD))
        mix.append(request)
    return mix


def _memory(workers: List[psutil.Process]) -> Dict[int, int]:
    return {worker.pid: worker.memory_info().rss for worker in workers}


def _cpu_seconds(workers: List[psutil.Process]) -> Dict[int, float]:
    return {worker.pid: sum(worker.cpu_times()[:2]) for worker in workers}


@pytest.fixture(scope="module")
def soaked(serving_case, tmp_path_factory):
    from local_serving.server import LocalEndpoint

    case = serving_case(CASE)
    environment = case.container_environment()
    environment.update({"SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS), "OMP_NUM_THREADS": "1"})
    limits = limits_of(environment)
    mix = _mix(limits)
    outcomes: List[Outcome] = []
    lock = threading.Lock()
    endpoint = LocalEndpoint(case.artifact_dir / "model.tar.gz", case.manifest["input_shape"],
                             tmp_path_factory.mktemp("soak"), environment, case.runtime)
    with endpoint:
        workers = endpoint.model_workers()
        started = time.monotonic()
        deadline = started + DURATION_S
        sent = itertools.count()

        def client(offset: int) -> None:
            for index in itertools.count(offset * 7):  # each client starts elsewhere in the mix
                if time.monotonic() >= deadline or next(sent) >= MAX_REQUESTS:
                    return
                name, body, content_type, accept, expected = mix[index % len(mix)]
                before = time.monotonic()
                try:
                    status = invoke(endpoint.url, body, content_type, accept, timeout=60).status
                except OSError:  # a dropped connection counts as a server failure
                    status = 599
                with lock:
                    outcomes.append(Outcome(name, expected, status, time.monotonic() - before, before - started))

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
        cpu_before = _cpu_seconds(workers)
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP_S)
        memory_after_warm_up = _memory(workers)
        for thread in threads:
            thread.join(DURATION_S + 120)
        memory_at_end = _memory(workers)
        cpu_used = {pid: seconds - cpu_before[pid] for pid, seconds in _cpu_seconds(workers).items()}
        workers_at_end = sorted(w.pid for w in endpoint.model_workers())
        elapsed = time.monotonic() - started
    return dict(outcomes=outcomes, workers=sorted(w.pid for w in workers), workers_at_end=workers_at_end, cpu_used=cpu_used,
                memory_after_warm_up=memory_after_warm_up, memory_at_end=memory_at_end, elapsed=elapsed, mix=mix)


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def test_the_soak_prints_its_figures(soaked):
    outcomes = soaked["outcomes"]
    valid = [o.seconds for o in outcomes if o.expected == 200]
    statuses = Counter(o.status for o in outcomes)
    growth = {pid: soaked["memory_at_end"][pid] / soaked["memory_after_warm_up"][pid] - 1 for pid in soaked["workers"]}
    print(f"\nsoak: {len(outcomes)} requests in {soaked['elapsed']:.0f}s from {CLIENTS} clients "
          f"({len(outcomes) / soaked['elapsed']:.0f}/s), statuses {dict(sorted(statuses.items()))}")
    print(f"valid requests: p50 {_percentile(valid, 50) * 1000:.0f} ms, p99 {_percentile(valid, 99) * 1000:.0f} ms "
          f"(bound {P99_BOUND_S * 1000:.0f} ms)")
    for pid in soaked["workers"]:
        print(f"worker {pid}: cpu {soaked['cpu_used'][pid]:.1f}s, rss {soaked['memory_after_warm_up'][pid] / 2**20:.0f} MiB "
              f"after warm-up -> {soaked['memory_at_end'][pid] / 2**20:.0f} MiB ({growth[pid]:+.1%})")
    assert len(outcomes) >= CLIENTS  # every client got at least one answer


def test_no_answer_is_a_5xx_and_each_request_gets_its_own_status(soaked):
    outcomes = soaked["outcomes"]
    assert [o for o in outcomes if o.status >= 500] == []
    wrong = defaultdict(Counter)
    for outcome in outcomes:
        if outcome.status != outcome.expected:
            wrong[outcome.name][outcome.status] += 1
    assert dict(wrong) == {}


def test_every_kind_of_request_was_sent(soaked):
    assert {o.name for o in soaked["outcomes"]} == {entry[0] for entry in soaked["mix"]}


def test_both_workers_served_and_neither_was_replaced(soaked):
    assert len(soaked["workers"]) == WORKERS
    assert soaked["workers_at_end"] == soaked["workers"]
    assert all(seconds > 1.0 for seconds in soaked["cpu_used"].values()), soaked["cpu_used"]


def test_worker_memory_stays_flat_after_the_warm_up(soaked):
    for pid in soaked["workers"]:
        before, after = soaked["memory_after_warm_up"][pid], soaked["memory_at_end"][pid]
        assert after <= before * (1 + RSS_GROWTH), (pid, before, after)


def test_the_p99_of_valid_requests_stays_under_its_bound(soaked):
    valid = [o.seconds for o in soaked["outcomes"] if o.expected == 200 and o.at >= WARM_UP_S]
    assert valid and _percentile(valid, 99) < P99_BOUND_S
