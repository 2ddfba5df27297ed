"""make bench: the arithmetic behind every reported ratio, the report files, and quick runs of each benchmark."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import build, common, concurrency, latency, report, serving, synth
from benchmarks.__main__ import MODULES, REPORT_ORDER
from tests.conftest import REPO

# ------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("size", [1, 2, 7, 100, 151])
@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(size, q):
    values = list(np.random.default_rng(size).exponential(10, size))
    assert common.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_median_of_an_even_count_is_the_midpoint_and_order_does_not_matter():
    assert common.median([4, 1, 3, 2]) == 2.5
    assert common.median([5]) == 5


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values, q):
    with pytest.raises(ValueError):
        common.percentile(values, q)


def test_summarize_reports_milliseconds():
    stats = common.summarize([0.010, 0.020, 0.030, 0.040, 1.0])
    assert stats["n"] == 5 and stats["median_ms"] == pytest.approx(30)
    assert stats["min_ms"] == pytest.approx(10) and stats["max_ms"] == pytest.approx(1000)
    assert stats["p90_ms"] == pytest.approx(float(np.percentile([10, 20, 30, 40, 1000], 90)))
    assert stats["samples_ms"] == [10, 20, 30, 40, 1000]


def test_ratio_and_its_guard():
    assert common.ratio(115, 100) == pytest.approx(1.15)
    with pytest.raises(ValueError):
        common.ratio(1, 0)


@pytest.mark.parametrize("value, limit, better, verdict", [
    (1.15, 1.15, "lower", "PASS"),  # exactly on the target passes
    (1.1501, 1.15, "lower", "MISS"),
    (0.5, 1.10, "lower", "PASS"),
    (2.0, 1.5, "higher", "PASS"),
    (1.0, 1.5, "higher", "MISS"),
    (3.0, None, "lower", None),  # reported without a target
])
def test_targets_are_pass_or_miss(value, limit, better, verdict):
    entry = common.target("x / y", value, limit, better)
    assert entry["verdict"] == verdict and entry["ratio"] == value and entry["target"] == limit


def test_target_refuses_an_unknown_direction_or_unit():
    with pytest.raises(ValueError):
        common.target("x", 1.0, 1.0, better="sideways")
    with pytest.raises(ValueError, match="unit"):
        common.target("x", 1.0, 1.0, unit="kg")


@pytest.mark.parametrize("value, limit, verdict, shown, bound", [(2.4, 3.0, "PASS", "2.4 ms", "≤ 3 ms"), (5.66, 3.0, "MISS", "5.7 ms", "≤ 3 ms"),
                                                                 (1.07, 1.1, "PASS", "1.07x", "≤ 1.10x")])
def test_a_target_in_milliseconds_is_shown_in_milliseconds(value, limit, verdict, shown, bound):
    entry = common.target("overhead", value, limit, unit="ms" if shown.endswith("ms") else "x")
    assert entry["verdict"] == verdict
    assert report.format_ratio(entry["ratio"], entry["unit"]) == shown and report.format_target(entry) == bound


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_interleaved_rotates_the_order_and_times_each_call():
    clock, calls = FakeClock(), []

    def candidate(name, cost):
        def call():
            calls.append(name)
            clock.now += cost
        return call

    timings = common.interleaved({"a": candidate("a", 1.0), "b": candidate("b", 2.0), "c": candidate("c", 3.0)},
                                 warmup=1, min_rounds=3, max_rounds=3, budget_s=0, clock=clock)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert timings.samples == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}
    assert (timings.rounds, timings.contended, timings.used) == (3, 0, 3) and timings.describe() == "3 rounds, all quiet"


def test_interleaved_stops_at_the_budget_but_not_before_min_rounds():
    clock = FakeClock()

    def tick():
        clock.now += 1.0

    long = common.interleaved({"x": tick}, warmup=0, min_rounds=2, max_rounds=100, budget_s=5, clock=clock)
    assert len(long.samples["x"]) == 5
    short = common.interleaved({"x": tick}, warmup=0, min_rounds=4, max_rounds=100, budget_s=0.5, clock=clock)
    assert len(short.samples["x"]) == 4
    capped = common.interleaved({"x": tick}, warmup=0, min_rounds=1, max_rounds=3, budget_s=1000, clock=clock)
    assert len(capped.samples["x"]) == 3


def test_a_candidate_that_times_itself_is_recorded_with_its_own_seconds():
    clock = FakeClock()

    def remote():  # 0.25 s of transport around 1.5 s measured on the other side
        clock.now += 1.75
        return common.Elapsed(1.5)

    def local():
        clock.now += 1.0

    timings = common.interleaved({"remote": remote, "local": local}, warmup=0, min_rounds=2, max_rounds=2, budget_s=0, clock=clock)
    assert timings.samples == {"remote": [1.5, 1.5], "local": [1.0, 1.0]}


def test_settle_pauses_after_every_call_and_is_not_timed():
    clock, pauses = FakeClock(), []

    def tick():
        clock.now += 1.0

    def sleep(seconds):
        pauses.append(seconds)
        clock.now += seconds

    timings = common.interleaved({"x": tick, "y": tick}, warmup=1, min_rounds=2, max_rounds=2, budget_s=0,
                                 settle_s=0.5, clock=clock, sleep=sleep)
    assert timings.samples == {"x": [1.0, 1.0], "y": [1.0, 1.0]}
    assert pauses == [0.5] * 6  # 2 warm-up calls + 2 rounds of 2


class FakeMonitor:
    """Reports the next of a list of 'other processes' loads, one per round."""

    def __init__(self, loads):
        self.loads = iter(loads)

    def __call__(self):
        return self

    def start(self):
        return self

    def other_cores(self):
        return next(self.loads)


def test_contended_rounds_are_set_aside_whole_and_replaced():
    clock, values = FakeClock(), iter(range(100))

    def call():
        clock.now += 1.0
        return next(values)

    seen = []
    timings = common.interleaved({"x": lambda: seen.append(call())}, warmup=0, min_rounds=3, max_rounds=3, budget_s=0,
                                 give_up_s=100, monitor=FakeMonitor([0.0, 1.5, 0.1, 0.9, 0.2]), clock=clock)
    assert (timings.rounds, timings.contended, timings.used) == (5, 2, 3)
    assert len(timings.samples["x"]) == 3 and seen == [0, 1, 2, 3, 4]
    assert timings.describe() == "3 quiet rounds used, 2 contended set aside"
    assert timings.record()["rounds_contended"] == 2


def test_a_machine_busy_throughout_keeps_every_round_and_says_so():
    clock = FakeClock()

    def tick():
        clock.now += 1.0

    timings = common.interleaved({"x": tick, "y": tick}, warmup=0, min_rounds=3, max_rounds=10, budget_s=2, give_up_s=6,
                                 monitor=FakeMonitor([2.0] * 100), clock=clock)
    # each round takes 2 s: rounds until 6 s have passed, then every round is used
    assert (timings.rounds, timings.contended, timings.used) == (3, 3, 3)
    assert len(timings.samples["x"]) == 3 and "all used although 3 were contended" in timings.describe()


# ------------------------------------------------------------------------------------ the machine


def test_environment_records_what_the_tables_show():
    env = common.environment()
    for key in ("date_utc", "cpu", "cores", "memory_gib", "python", "torch", "onnxruntime", "aws_cdk_lib", "cdk_cli"):
        assert key in env
    assert env["date_utc"].endswith("UTC") and env["cores"] >= 1 and env["torch"]


def test_cpu_model_and_memory_come_from_proc(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Example CPU @ 3.0GHz\n")
    (tmp_path / "meminfo").write_text("MemTotal:       25165824 kB\n")
    assert common.cpu_model(tmp_path / "cpuinfo") == "Example CPU @ 3.0GHz"
    assert common.memory_gib(tmp_path / "meminfo") == 24.0


def test_cpu_monitor_counts_our_own_work_as_ours():
    monitor = common.CpuMonitor().start()
    end = __import__("time").process_time() + 0.3
    while __import__("time").process_time() < end:
        pass
    other = monitor.other_cores()
    assert other is not None and 0 <= other <= os.cpu_count()


@pytest.mark.parametrize("kind", ["torchserve", "mms"])
def test_waits_for_another_model_server_of_its_kind_then_goes_on(monkeypatch, kind):
    answers = iter([[123], [123], []])
    asked = []
    monkeypatch.setattr(common, "model_server_pids", lambda k: asked.append(k) or next(answers))
    lines = []
    progress = common.Progress("t")
    monkeypatch.setattr(progress, "say", lines.append)
    common.wait_for_no_model_server(60, progress, kind, poll_s=0)
    assert len(lines) == 2 and "123" in lines[0] and kind in lines[0] and set(asked) == {kind}


def test_gives_up_on_another_model_server_after_the_limit(monkeypatch):
    monkeypatch.setattr(common, "model_server_pids", lambda kind: [7])
    with pytest.raises(RuntimeError, match="only one may run"):
        common.wait_for_no_model_server(0, common.Progress("t", enabled=False), poll_s=0)


# ------------------------------------------------------------------------------------ report

ENV = {"date_utc": "2026-01-01 00:00 UTC", "cpu": "Example CPU", "cores": 2, "memory_gib": 24.0, "os": "Linux",
       "python": "3.11.7", "torch": "2.13.0", "onnxruntime": "1.31.1", "aws_cdk_lib": "2.275.0", "cdk_cli": "2.1148.1"}


def _stat(median_ms, **extra):
    return {"n": 10, "median_ms": median_ms, "p90_ms": median_ms * 1.1, "p99_ms": median_ms * 1.2, **extra}


def _sections():
    """One section per benchmark, shaped as each module's run() returns it."""
    def wrap(name, body):
        return {"title": MODULES[name].TITLE, "quick": False, "environment": ENV, "duration_s": 12.0,
                "contention": {"other_cores": 0.05, "waited_s": 0}, **body}

    batches = {b: {n: _stat(m * int(b), vs_eager=m / 100, vs_onnxruntime=m / 60) for n, m in
                   [("eager", 100), ("trace", 80), ("script", 82), ("optimized", 66), ("onnxruntime", 60)]} for b in ("1", "8")}
    served = {name: {"model_server": server, "stats": {serving.FORWARD: _stat(2.0), serving.HANDLER: _stat(2.3), serving.SERVED: _stat(2.0 + overhead)},
                     "overhead_ms": overhead, "handler_ms": 0.3,
                     "breakdown_ms": {serving.OUTSIDE_WORKER: overhead - 1.0, serving.WORKER_AND_TOOLKIT: 0.7, serving.HANDLER_SHARE: 0.3}}
              for name, server, overhead in [("pytorch-2.6.0", "torchserve 0.12.0", 4.5), ("eia-pytorch-1.5.1", "multi-model-server 1.1.2", 2.5)]}
    levels = {"1": (20.0, 60.0), "4": (30.0, 150.0), "16": (31.0, 600.0)}
    cells = concurrency.compare({name: {level: {"throughput_rps": rps * scale, "p50_ms": p99 / 2, "p99_ms": p99 / scale, "n": 90}
                                        for level, (rps, p99) in levels.items()}
                                 for name, scale in [("1x2", 0.8), ("2x1", 1.0), ("2x2", 0.5)]}, "2x1")
    return {
        "concurrency": wrap("concurrency", {"model": "example-resnet-50", "cores": 2, "auto_split": "2x1", "cells": cells, "notes": [],
                                            "targets": [common.target("auto / best", 1.0, concurrency.TARGET_VS_BEST, better="higher")]}),
        "latency": wrap("latency", {"model": "example-resnet-50", "threads": 2, "batches": batches, "notes": ["n"],
                                    "targets": [common.target("batch 1: optimized / ORT", 1.10, 1.15)]}),
        "serving": wrap("serving", {"model": "example-resnet-tiny at 224x224 (probe)", "runtimes": served, "notes": [],
                                    "targets": [common.target(f"{name}: served p50 - forward p50", r["overhead_ms"], 3.0, unit="ms")
                                                for name, r in served.items()]}),
        "synth": wrap("synth", {"whole_app_s": [18.0, 19.0, 17.5], "empty_app_s": [6.0, 6.1, 5.9], "whole_app_median_s": 18.0,
                                "empty_app_median_s": 6.0, "whole_over_empty": 3.0, "targets": [common.target("whole / empty", 3.0, 1.25)]}),
        "scale": wrap("scale", {"empty_app_s": 6.0, "environments": 3, "noop_rebuild_s": 0.6, "marginal_synth_s_per_model_env": 0.15,
                                "rows": [{"models": n, "synth_s": 20.0 + 0.45 * n, "synth_s_per_model_env": (14.0 + 0.45 * n) / (3 * n),
                                          "build_s": 2.0 * n, "build_s_per_model": 2.0, "quotas": {
                                              "stacks": 7 + 3 * min(n, 16), "template resources": {"stack": "Dev/Serving", "used": 17 + 12 * n // 8, "limit": 500, "share": (17 + 12 * n // 8) / 500},
                                              "template bytes": {"stack": "Dev/Serving", "used": 20000 * n, "limit": 10**6, "share": 0.02 * n},
                                              "actions in a pipeline stage": {"stack": "Pipeline", "used": 36, "limit": 50, "share": 0.72}}}
                                         for n in (1, 10)],
                                "targets": [common.target("synth s per model·env", 0.19, 0.2, unit="s"),
                                            common.target("largest quota share", 0.72, 0.8, unit="%")]}),
        "diff": wrap("diff", {"cold_s": 60.0, "warm_s": [2.0, 2.2, 2.1], "synth_s": [12.0, 13.0, 12.5], "warm_median_s": 2.1,
                              "edited_s": [16.0, 17.0, 16.5], "edited_median_s": 16.5, "edited_over_synth": 1.32,
                              "synth_median_s": 12.5, "cold_over_synth": 4.8, "warm_over_synth": 0.168,
                              "targets": [common.target("edited / synth", 1.32, 1.5), common.target("warm / synth", 0.168, None),
                                          common.target("cold / synth", 4.8, None)]}),
        "build": wrap("build", {"model": "example-resnet-50", "recipe": "optimized", "cold_s": 10.0, "noop_s": [0.4, 0.5, 0.4],
                                "noop_median_s": 0.4, "cold_over_noop": 25.0, "targets": [common.target("noop / cold", 0.04, None)],
                                "compression": {"input_bytes": 10**8, "ours_bytes": 9 * 10**7, "tar_bytes": 9 * 10**7,
                                                "ours_mb_per_s": 24.0, "tar_mb_per_s": 30.0, "ours_over_tar": 0.8}}),
    }


def test_readme_block_is_replaced_and_the_hand_written_text_stays(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{report.START}\nold table\n{report.END}\n\n## Notes\nkept\n")
    report.write_readme(readme, "new table")
    text = readme.read_text()
    assert text == f"# Title\n\nintro\n\n{report.START}\nnew table\n{report.END}\n\n## Notes\nkept\n"
    report.write_readme(readme, "newer")  # idempotent shape
    assert readme.read_text().count(report.START) == 1 and "newer" in readme.read_text() and "new table" not in readme.read_text()


def test_readme_without_markers_gets_them_appended(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Mine\n")
    report.write_readme(readme, "table")
    assert readme.read_text() == f"# Mine\n\n{report.START}\ntable\n{report.END}\n"


def test_a_subset_run_keeps_the_other_sections_in_report_order():
    old = {"schema": report.SCHEMA, "benchmarks": {"synth": {"old": 1}, "latency": {"old": 2}}}
    merged = report.merge(old, {"latency": {"new": 3}, "build": {"new": 4}}, REPORT_ORDER)
    assert list(merged["benchmarks"]) == ["latency", "synth", "build"]
    assert merged["benchmarks"]["latency"] == {"new": 3} and merged["benchmarks"]["synth"] == {"old": 1}


def test_results_round_trip_and_a_foreign_schema_starts_afresh(tmp_path):
    report.save(tmp_path, {"schema": report.SCHEMA, "benchmarks": {"x": {"y": 1}}})
    assert report.load(tmp_path)["benchmarks"] == {"x": {"y": 1}}
    (tmp_path / report.RESULTS_FILE).write_text(json.dumps({"schema": 999, "benchmarks": {"x": {}}}))
    assert report.load(tmp_path)["benchmarks"] == {}


def test_markdown_table_right_aligns_number_columns():
    text = report.markdown_table(["name", "ms", "ratio"], [["eager", "12.5", "1.00x"], ["a|b", "3.0", "—"]])
    lines = text.splitlines()
    assert lines[1] == "|---|---:|---:|"
    assert lines[3] == "| a\\|b | 3.0 | — |"


def test_render_lists_every_target_with_its_verdict_and_every_environment(tmp_path):
    results = {"schema": report.SCHEMA, "benchmarks": _sections()}
    text = report.render(results, MODULES, REPORT_ORDER)
    assert "| latency | batch 1: optimized / ORT | 1.10x | ≤ 1.15x | PASS |" in text
    assert "| synth | whole / empty | 3.00x | ≤ 1.25x | MISS |" in text
    assert "| build | noop / cold | 0.04x | — | — |" in text
    assert "| diff | edited / synth | 1.32x | ≤ 1.50x | PASS |" in text and "| diff | warm / synth | 0.17x | — | — |" in text
    assert "| warm `make diff` (nothing changed since) | 2.1 | 2.0, 2.2, 2.1 | 0.17x |" in text
    assert text.count("Example CPU, 2 cores, 24.0 GiB") == len(REPORT_ORDER) and text.count("torch 2.13.0") == len(REPORT_ORDER)
    for number, name in enumerate(REPORT_ORDER, start=1):
        assert f"### {number}. {MODULES[name].TITLE} (`{name}`)" in text
    assert "| 8 | optimized (served form) | 528.0 |" in text
    assert "| concurrency | auto / best | 1.00x | ≥ 0.95x | PASS |" in text
    assert "| 2x1 (auto) | 16 | 31.0 | 300 | 600 | 90 | 1.00x | 1.00x |" in text
    assert "| 2x2 | 16 | 15.5 | 300 | 1200 | 90 | 0.50x | 2.00x |" in text
    assert "| serving | pytorch-2.6.0: served p50 - forward p50 | 4.5 ms | ≤ 3 ms | MISS |" in text
    assert "| serving | eia-pytorch-1.5.1: served p50 - forward p50 | 2.5 ms | ≤ 3 ms | PASS |" in text
    assert "| eia-pytorch-1.5.1 | multi-model-server 1.1.2 | served, npy body | 4.50 | 5.40 | 10 | +2.50 |" in text
    assert f"| eia-pytorch-1.5.1 | multi-model-server 1.1.2 | of which: {serving.OUTSIDE_WORKER} | 1.50 |  |  |  |" in text
    assert "| scale | synth s per model·env | 0.19 s | ≤ 0.20 s | PASS |" in text and "| scale | largest quota share | 72% | ≤ 80% | PASS |" in text
    assert "| 10 | 24.5 | 0.617 | 37 | 32 (6%) | 200 (20%) | 36 (72%) | 20.0 | 2.00 |" in text


def test_chart_draws_every_benchmark_and_a_missing_one(tmp_path):
    sections = _sections()
    report.chart(tmp_path / "all.png", {"benchmarks": sections}, MODULES, REPORT_ORDER)
    del sections["serving"]
    report.chart(tmp_path / "some.png", {"benchmarks": sections}, MODULES, REPORT_ORDER)
    for name in ("all.png", "some.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_module_has_the_report_interface():
    assert set(MODULES) == set(REPORT_ORDER)
    for module in (latency, serving, synth, build, concurrency):
        assert module.NAME in MODULES and callable(module.run) and callable(module.table) and callable(module.plot)


def test_the_empty_app_is_the_minimal_cdk_app_on_this_venv(tmp_path):
    directory = synth.empty_app(tmp_path / "empty")
    assert (directory / "app.py").read_text().splitlines() == [
        "import aws_cdk as cdk", "", "app = cdk.App()", 'cdk.Stack(app, "Empty")', "app.synth()"]
    assert json.loads((directory / "cdk.json").read_text())["app"] == f"{sys.executable} app.py"


def assert_verdicts_follow_their_ratios(targets):
    """Each verdict is the one its ratio and target call for (not merely one of PASS and MISS)."""
    assert targets
    for entry in targets:
        assert entry["target"] is not None, entry
        passed = entry["ratio"] <= entry["target"] if entry["better"] == "lower" else entry["ratio"] >= entry["target"]
        assert entry["verdict"] == ("PASS" if passed else "MISS"), entry


@pytest.mark.parametrize("entry", [
    {"ratio": 1.2, "target": 1.15, "better": "lower", "verdict": "PASS"},  # a wrong PASS
    {"ratio": 1.0, "target": 1.15, "better": "lower", "verdict": "MISS"},  # a wrong MISS
    {"ratio": 0.9, "target": 0.95, "better": "higher", "verdict": "PASS"},
    {"ratio": 1.0, "target": None, "better": "lower", "verdict": None},  # no target: nothing was checked
])
def test_the_verdict_check_of_the_quick_runs_can_fail(entry):
    with pytest.raises(AssertionError):
        assert_verdicts_follow_their_ratios([entry])
    assert_verdicts_follow_their_ratios([common.target("x", 1.2, 1.15)])  # what common.target gives passes


# ------------------------------------------------------------------------------------ quick runs


def _bench(tmp_path, *names):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "benchmarks", *names, "--quick", "--quiet-wait", "0",
                           "--out", str(out), "--work-dir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())["benchmarks"]
    assert list(results) == [n for n in REPORT_ORDER if n in names]
    readme = (out / "README.md").read_text()
    assert report.START in readme and "quick mode" in readme
    assert (out / "results.png").is_file()
    assert all(f"[bench {name}" in done.stderr for name in names)  # progress lines
    return results


def test_cli_refuses_an_unknown_benchmark():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "nonsense"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown benchmark nonsense" in done.stderr


def test_quick_build_benchmark(tmp_path):
    section = _bench(tmp_path, "build")["build"]
    assert section["cold_s"] > section["noop_median_s"] > 0
    assert section["compression"]["ours_mb_per_s"] > 0 and section["compression"]["tar_mb_per_s"] > 0
    assert section["environment"]["torch"] and section["quick"] is True


def test_quick_latency_benchmark(tmp_path):
    """Measured in the cpu/serverless runtime's own Python and torch 2.6, with ONNX Runtime installed for it
    (never into its venv): every recipe as served, the AOTInductor package included, and each form's cold start."""
    # The ONNX export runs here (requirements-dev.txt installs requirements-bench.txt): its branch is never skipped.
    assert common.package_version("onnxruntime"), "onnxruntime missing: make setup installs requirements-dev.txt"
    section = _bench(tmp_path, "latency")["latency"]
    assert (section["runtime"], section["torch"], section["python"]) == ("pytorch-2.6.0", "2.6.0", "3.12")
    forms = {"eager", "trace", "script", "optimized", "aoti", latency.ORT}
    for batch in ("1", "8"):
        stats = section["batches"][batch]
        assert set(stats) == forms
        for stat in stats.values():
            assert stat["max_abs_error_vs_eager"] < 1e-2  # every variant computes the same model, ONNX Runtime too
        assert stats["eager"]["vs_eager"] == 1.0 and stats[latency.ORT]["vs_onnxruntime"] == 1.0
    assert [t["what"].split(" median")[0] for t in section["targets"]] == [
        "batch 1: aoti", "batch 1: optimized", "batch 8: aoti", "batch 8: optimized"]
    for entry in section["targets"]:
        batch, recipe = entry["what"].split(":")[0].split()[1], entry["what"].split(": ")[1].split()[0]
        stats = section["batches"][batch]
        assert entry["ratio"] == pytest.approx(stats[recipe]["median_ms"] / stats[latency.ORT]["median_ms"])
    assert_verdicts_follow_their_ratios([t for t in section["targets"] if t["target"] is not None])
    assert set(section["cold"]) == forms - {"eager"}
    for cold in section["cold"].values():
        assert cold["cold_start_median_s"] == pytest.approx(cold["load_median_s"] + cold["first_request_median_s"])
    assert section["preferred_recipes"] == latency.preferred_recipes(section)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "torch 2.6.0 (pytorch-2.6.0 runtime)" in readme and "| cold start | aoti (AOTInductor .pt2) |" in readme


def _latency_section(steady_ms: dict, cold_s: dict) -> dict:
    return {"batches": {batch: {recipe: {"median_ms": ms * int(batch)} for recipe, ms in steady_ms.items()} for batch in ("1", "8")},
            "cold": {recipe: {"cold_start_median_s": s} for recipe, s in cold_s.items()}}


def test_recipe_auto_follows_the_measurements_per_profile():
    """cpu: the faster steady state; serverless: the shorter cold start. Either answer is reachable."""
    assert latency.preferred_recipes(_latency_section({"optimized": 60, "aoti": 50}, {"optimized": 0.4, "aoti": 1.7})) == {
        "cpu": "aoti", "serverless": "optimized"}
    assert latency.preferred_recipes(_latency_section({"optimized": 50, "aoti": 60}, {"optimized": 2.0, "aoti": 1.7})) == {
        "cpu": "optimized", "serverless": "aoti"}


def test_recipe_auto_is_what_the_committed_latency_benchmark_measured():
    """config/serving_targets.MEASURED_CPU_RECIPES must say what benchmarks/results.json shows: re-running `make bench`
    on a machine where the other form wins fails here until the table is updated (with the README's reasons)."""
    from config.serving_targets import MEASURED_CPU_RECIPES

    committed = json.loads((REPO / "benchmarks" / "results.json").read_text())["benchmarks"]["latency"]
    assert not committed.get("quick"), "benchmarks/results.json holds a quick run: run `make bench BENCH_ARGS=latency`"
    assert MEASURED_CPU_RECIPES == latency.preferred_recipes(committed) == committed["preferred_recipes"]


# ------------------------------------------------------------------------------------ concurrency: the arithmetic


def test_the_candidate_splits_share_the_cores_and_include_the_servers_default():
    assert concurrency.splits(2) == [(1, 2), (2, 1), (2, 2)]  # all threads in one worker, one per worker, oversubscribed
    assert concurrency.splits(4) == [(1, 4), (4, 1), (4, 4)] and concurrency.splits(1) == [(1, 1)]
    assert concurrency.label(2, 1) == "2x1"


def test_the_benchmark_s_auto_split_is_the_one_the_config_derives(tmp_path):
    from config import load_config
    from config.workers import worker_plan
    from tests.conftest import make_config

    for instance_type, vcpus in (("ml.m5.large", 2), ("ml.c5.xlarge", 4)):
        def change(model, instance_type=instance_type):
            model["serving"]["profiles"]["eia"]["instance_type"] = instance_type
        deployment = load_config(make_config(tmp_path / instance_type, change)).environment("dev").models[0]
        assert concurrency.auto_split(vcpus) == worker_plan(deployment).as_tuple()


def test_a_closed_loop_keeps_every_client_busy_and_counts_answers_in_the_window():
    import time

    def call():
        time.sleep(0.02)

    level = concurrency.closed_loop(call, 4, 0.4)
    # 4 clients x 20 ms calls: about 200 answers/s; sleeping needs no CPU, so a busy machine barely moves it.
    assert 120 < level.throughput <= 4 / 0.02 * 1.05
    assert min(level.latencies_s) >= 0.02 and level.in_window == pytest.approx(level.throughput * 0.4)
    assert 0 <= len(level.latencies_s) - level.in_window <= 4  # at most one call per client ends after the window


def test_a_failing_call_fails_the_closed_loop():
    def call():
        raise RuntimeError("status 500")

    with pytest.raises(RuntimeError, match="status 500"):
        concurrency.closed_loop(call, 3, 0.2)


def test_a_cell_pools_its_rounds():
    rounds = [concurrency.Level(4, 2.0, [0.010, 0.020, 0.030], in_window=10), concurrency.Level(4, 2.0, [0.040, 1.0], in_window=30)]
    stat = concurrency.cell(rounds)
    assert stat["throughput_rps"] == pytest.approx(40 / 4.0) and stat["throughput_per_round_rps"] == [5.0, 15.0]
    assert stat["p99_ms"] == pytest.approx(float(np.percentile([10, 20, 30, 40, 1000], 99)))
    assert stat["p50_ms"] == pytest.approx(30) and (stat["n"], stat["rounds"]) == (5, 2)
    with pytest.raises(ValueError):
        concurrency.cell([])


def test_the_best_split_is_the_fastest_and_ties_go_to_the_lower_p99():
    def cells(**rates):
        return {name: {"16": {"throughput_rps": rps, "p99_ms": p99}} for name, (rps, p99) in rates.items()}

    assert concurrency.best(cells(a=(10.0, 100.0), b=(12.0, 900.0)), 16) == "b"
    assert concurrency.best(cells(a=(12.0, 100.0), b=(12.0, 900.0)), 16) == "a"
    compared = concurrency.compare(cells(a=(10.0, 100.0), b=(12.0, 50.0)), "a")
    assert compared["b"]["16"]["throughput_vs_auto"] == pytest.approx(1.2) and compared["b"]["16"]["p99_vs_auto"] == pytest.approx(0.5)


@pytest.mark.slow
def test_quick_concurrency_benchmark(tmp_path):
    section = _bench(tmp_path, "concurrency")["concurrency"]
    cores = os.cpu_count()
    assert set(section["cells"]) == {concurrency.label(*split) for split in concurrency.splits(cores)}
    for name, by_level in section["cells"].items():
        assert set(by_level) == {"1", "4", "16"} and all(stat["throughput_rps"] > 0 and stat["n"] > 0 for stat in by_level.values())
        workers, threads = map(int, name.split("x"))
        # The candidate's settings reached the server: its worker count, and each worker's OMP_NUM_THREADS.
        assert section["servers"][name]["workers_seen"] == [workers]
        assert section["servers"][name]["worker_threads_env"] == [[str(threads)]]
    assert section["auto_split"] == concurrency.label(*concurrency.auto_split(cores))
    assert_verdicts_follow_their_ratios(section["targets"])
    assert not [pid for pid in common.model_server_pids() if _cwd(pid).startswith(str(tmp_path))]  # every server was stopped


@pytest.mark.slow
def test_quick_serving_benchmark(tmp_path):
    section = _bench(tmp_path, "serving")["serving"]
    # Each runtime the endpoints run, served by its own model server, against its own in-runtime baseline.
    assert set(section["runtimes"]) == set(serving.RUNTIMES) == {"pytorch-2.6.0", "eia-pytorch-1.5.1"}
    assert section["runtimes"]["pytorch-2.6.0"]["model_server"].startswith("torchserve ")
    assert section["runtimes"]["eia-pytorch-1.5.1"]["model_server"] == "multi-model-server 1.1.2"
    for name, entry in zip(serving.RUNTIMES, section["targets"]):
        result = section["runtimes"][name]
        assert set(result["stats"]) == {serving.FORWARD, serving.HANDLER, serving.SERVED}
        assert all(stat["median_ms"] > 0 for stat in result["stats"].values())
        assert result["overhead_ms"] == pytest.approx(result["stats"][serving.SERVED]["median_ms"] - result["stats"][serving.FORWARD]["median_ms"])
        assert entry["what"].startswith(name) and entry["unit"] == "ms" and entry["ratio"] == result["overhead_ms"]
        assert entry["target"] == serving.TARGET_OVERHEAD_MS
        # Where it goes: the server's own PredictionTime (read from its metrics log) splits it, and the parts add up.
        assert set(result["breakdown_ms"]) == {serving.OUTSIDE_WORKER, serving.WORKER_AND_TOOLKIT, serving.HANDLER_SHARE}
        assert sum(result["breakdown_ms"].values()) == pytest.approx(result["overhead_ms"])
    assert_verdicts_follow_their_ratios(section["targets"])
    for kind in ("torchserve", "mms"):  # ours were stopped
        assert not [pid for pid in common.model_server_pids(kind) if _cwd(pid).startswith(str(tmp_path))]


def _cwd(pid):
    import psutil

    try:
        return psutil.Process(pid).cwd()
    except psutil.Error:
        return ""


@pytest.mark.slow
def test_quick_synth_benchmark(tmp_path):
    section = _bench(tmp_path, "synth")["synth"]
    assert section["whole_app_median_s"] > 0 and section["empty_app_median_s"] > 0
    assert section["whole_app_assembly"]["templates"] >= 7 and section["whole_app_assembly"]["model_assets"] >= 1
    [entry] = section["targets"]
    assert entry["ratio"] == pytest.approx(section["whole_app_median_s"] / section["empty_app_median_s"])
    assert_verdicts_follow_their_ratios(section["targets"])


@pytest.mark.slow
def test_quick_diff_benchmark(tmp_path):
    section = _bench(tmp_path, "diff")["diff"]
    assert section["cold_s"] > 0 and section["edited_median_s"] > 0 and section["warm_median_s"] > 0 and section["synth_median_s"] > 0
    # After a new edit only the base came from the cache; unchanged, both sides did: that is what each measures.
    assert [line.split(" for ")[0] for line in section["edited_cache_lines"]] == ["base: cached assembly"]
    assert any(line.startswith("base: cached assembly for commit ") for line in section["warm_cache_lines"])
    assert any(line.startswith("head: cached assembly for working tree ") for line in section["warm_cache_lines"])
    edited, warm, cold = section["targets"]
    assert edited["ratio"] == pytest.approx(section["edited_median_s"] / section["synth_median_s"])
    assert warm["ratio"] == pytest.approx(section["warm_median_s"] / section["synth_median_s"]) and warm["verdict"] is None
    assert cold["ratio"] == pytest.approx(section["cold_s"] / section["synth_median_s"]) and cold["verdict"] is None
    assert_verdicts_follow_their_ratios([edited])
