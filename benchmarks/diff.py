"""`make diff` for a one-line config change: cold (empty cache), warm after a new one-line edit (the base's assembly
cached, the working tree's synthesized) and warm with nothing changed, vs one `cdk synth` of the app, in one run.

The scenario is a git repository in a temporary directory holding this checkout's committed tree
(tests/test_infra_diff.py's `committed_copy`: this infra_diff, the venvs and node_modules linked), with one line of
config/environments/dev.yaml edited in the working tree (`scaling.max_instances` 1 -> 2): `make diff BASE=HEAD`
there, its cache in the temporary directory ($INFRA_DIFF_CACHE), first with the cache empty; then, alternating, the
same line set to a value not diffed before (what a reviewer sees after pushing a fix) and the same again unchanged.
The synthesis it is compared with is the repository's CLI on the same copy (`npx cdk synth '**'`, synth.py's), with
the artifacts already built. Target: the warm run after a new edit at most 1.5x one synthesis.
--quick: the tiny example classifier only (no detector), one warm run and one synthesis.
"""
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import CpuMonitor, Options, Progress, interleaved, median, ratio, target
from benchmarks.synth import _synth
from tests.conftest import TINY_BUILD
from tests.test_infra_diff import _edit_yaml, committed_copy

NAME = "diff"
TITLE = "make diff: cold and warm vs one cdk synth"
TARGET = 1.5
REPETITIONS, QUICK_REPETITIONS = 3, 1
GIVE_UP_S = 300
EDITED_FILE = "config/environments/dev.yaml"
# The copy's requirement files are newer than the linked venvs' stamps: make must not try to rebuild the venvs.
MAKE = ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", ".venv-mxnet/.installed", "-o", "node_modules/.installed",
        "diff", "BASE=HEAD"]
EXPECTED_SUMMARY = "1 stack with differences (Dev/Serving)"


def _tiny_classifier_only(repo: Path) -> None:
    (repo / "config" / "models" / "object-detector.yaml").unlink()
    _edit_yaml(repo / "config" / "models" / "image-classifier.yaml", lambda model: model["build"].update(TINY_BUILD))


def one_line_change(repo: Path, value: int = 2) -> None:
    """The working tree's edit: dev's max_instances (committed as 1), one line of the YAML."""
    path = repo / EDITED_FILE
    text = path.read_text()
    lines = [line for line in text.splitlines(keepends=True) if line.strip().startswith("max_instances: ")]
    assert len(lines) == 1, f"{EDITED_FILE} has no single 'max_instances:' line"
    path.write_text(text.replace(lines[0], lines[0].split(":")[0] + f": {value}\n"))


def make_diff(repo: Path, cache: Path) -> subprocess.CompletedProcess:
    """`make diff BASE=HEAD`, timed (`.elapsed`); make exits 2 for the differences it expects (the tool's exit 1)."""
    started = time.perf_counter()
    done = subprocess.run(MAKE, cwd=repo, env={**os.environ, "INFRA_DIFF_CACHE": str(cache)}, capture_output=True, text=True)
    done.elapsed = time.perf_counter() - started
    if EXPECTED_SUMMARY not in done.stdout or "Error 1" not in done.stderr:
        raise RuntimeError(f"make diff in {repo} did not report the one change ({done.returncode}):\n"
                           f"{(done.stdout + done.stderr)[-3000:]}")
    return done


def run(options: Options, progress: Progress) -> dict:
    repetitions = QUICK_REPETITIONS if options.quick else REPETITIONS
    with tempfile.TemporaryDirectory(prefix="bench-diff-", dir=options.work_dir) as tmp_name:
        tmp = Path(tmp_name)
        repo = committed_copy(tmp / "repo", _tiny_classifier_only if options.quick else lambda repo: None)
        one_line_change(repo)
        cache = tmp / "cache"
        cold = make_diff(repo, cache)
        progress.say(f"cold make diff: {cold.elapsed:.1f}s")
        outputs, edits, last = iter(range(1000)), iter(range(3, 1000)), {}

        def edited():
            one_line_change(repo, next(edits))  # a working tree not diffed before: its side is synthesized
            last["edited"] = make_diff(repo, cache)
            progress.say(f"warm make diff after a new one-line edit: {last['edited'].elapsed:.1f}s")

        def warm():
            last["warm"] = make_diff(repo, cache)
            progress.say(f"warm make diff, nothing changed: {last['warm'].elapsed:.1f}s")

        def synth():
            seconds = _synth(repo, tmp / f"synth-{next(outputs)}.out", f"artifacts_dir={cache / 'artifacts' / 'head'}").elapsed
            progress.say(f"cdk synth: {seconds:.1f}s")

        # In this order within a round: the unchanged run repeats the edited one just diffed.
        timings = interleaved({"edited make diff": edited, "warm make diff": warm, "cdk synth": synth}, warmup=0, min_rounds=repetitions,
                              max_rounds=repetitions, budget_s=0, give_up_s=0 if options.quick else GIVE_UP_S, monitor=CpuMonitor)
        cached = [line for line in last["warm"].stderr.splitlines() if "cached assembly" in line]
        cached_after_edit = [line for line in last["edited"].stderr.splitlines() if "cached assembly" in line]
    samples = timings.samples
    warm_s, synth_s, edited_s = median(samples["warm make diff"]), median(samples["cdk synth"]), median(samples["edited make diff"])
    return {
        "scenario": f"{EDITED_FILE}: scaling.max_instances 1 -> 2 (one line, uncommitted), make diff BASE=HEAD",
        "models": "example-resnet-tiny only" if options.quick else "the configured models",
        "cold_s": cold.elapsed,
        "warm_s": samples["warm make diff"],
        "synth_s": samples["cdk synth"],
        "warm_median_s": warm_s,
        "synth_median_s": synth_s,
        "edited_s": samples["edited make diff"],
        "edited_median_s": edited_s,
        "cold_over_synth": ratio(cold.elapsed, synth_s),
        "warm_over_synth": ratio(warm_s, synth_s),
        "edited_over_synth": ratio(edited_s, synth_s),
        "warm_cache_lines": cached,
        "edited_cache_lines": cached_after_edit,
        "targets": [target("warm make diff after a new one-line edit, median / one cdk synth median", ratio(edited_s, synth_s), TARGET,
                           short="edited diff / synth"),
                    target("warm make diff, nothing changed, median / one cdk synth median", ratio(warm_s, synth_s), None,
                           short="warm diff / synth"),
                    target("cold make diff / one cdk synth median", ratio(cold.elapsed, synth_s), None, short="cold diff / synth")],
        "rounds": {**timings.record(), "described": timings.describe()},
        "notes": [f"cold: the first make diff with an empty cache (both sides built and synthesized); after a new edit: the "
                  f"edited line set to a value not diffed before (the base's assembly cached, the working tree synthesized); "
                  f"nothing changed: the same again ({timings.describe()}, alternating with the synthesis)",
                  "after a new edit, cache lines: " + ("; ".join(cached_after_edit) or "none"),
                  "nothing changed, cache lines: " + ("; ".join(cached) or "none")]
                 + (["quick mode: the tiny classifier only, one repetition"] if options.quick else []),
    }


# ------------------------------------------------------------------------------------ report

COLUMNS = ["run", "median s", "runs s", "vs one cdk synth"]


def table(section: dict):
    rows = [
        ["cold `make diff` (empty cache)", f"{section['cold_s']:.1f}", f"{section['cold_s']:.1f}", f"{section['cold_over_synth']:.2f}x"],
        ["warm `make diff` after a new one-line edit", f"{section['edited_median_s']:.1f}",
         ", ".join(f"{s:.1f}" for s in section["edited_s"]), f"{section['edited_over_synth']:.2f}x"],
        ["warm `make diff` (nothing changed since)", f"{section['warm_median_s']:.1f}", ", ".join(f"{s:.1f}" for s in section["warm_s"]),
         f"{section['warm_over_synth']:.2f}x"],
        ["one `cdk synth '**'` of the app", f"{section['synth_median_s']:.1f}", ", ".join(f"{s:.1f}" for s in section["synth_s"]), "1.00x"],
    ]
    return COLUMNS, rows


def plot(ax, section: dict) -> None:
    names = ["cold diff", "after an edit", "unchanged", "cdk synth"]
    medians = [section["cold_s"], section["edited_median_s"], section["warm_median_s"], section["synth_median_s"]]
    bars = ax.bar(names, medians, color=["tab:gray", "tab:blue", "tab:cyan", "tab:orange"])
    ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    for index, runs in ((1, section["edited_s"]), (2, section["warm_s"]), (3, section["synth_s"])):
        ax.plot([index] * len(runs), runs, "k.", markersize=4)
    ax.axhline(section["synth_median_s"] * TARGET, color="tab:red", linestyle="--", linewidth=0.8, label=f"{TARGET}x synth")
    ax.set_ylabel("seconds (median, dots: runs)")
    ax.legend(fontsize=7)
    ax.set_title(f"make diff after an edit: {section['edited_over_synth']:.2f}x one cdk synth", fontsize=10)
