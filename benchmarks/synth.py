"""`cdk synth` of the whole app vs an empty CDK Python app: same CLI, same venv python, same run.

Both run `npx --prefix REPO --no-install cdk synth '**' --quiet --no-notices -o TMP` (the
repository's pinned CLI, the Makefile's environment). The whole app runs it in the repository
(every stage and stack, cdk-nag as a policy-validation plugin), with the configured artifacts
already built; the empty app in a temporary directory holding only app.py (`cdk.App();
cdk.Stack(app, "Empty"); app.synth()`) and a cdk.json naming this venv's python. One untimed
warm-up of each, then alternating repetitions; the median of each. Target: at most 1.25x.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, CpuMonitor, Options, Progress, interleaved, median, ratio, target

NAME = "synth"
TITLE = "cdk synth: the whole app vs an empty CDK app"
TARGET = 1.25
REPETITIONS, QUICK_REPETITIONS = 3, 1
GIVE_UP_S = 150  # contended repetitions are replaced until then (see common.interleaved)
# --prefix: the repository's pinned CLI (package.json) wherever the command runs.
COMMAND = ["npx", "--prefix", str(REPO), "--no-install", "cdk", "synth", "**", "--quiet", "--no-notices"]
EMPTY_APP = 'import aws_cdk as cdk\n\napp = cdk.App()\ncdk.Stack(app, "Empty")\napp.synth()\n'
# What the Makefile exports: no version check, no telemetry (nothing may call AWS), no Node banner.
CDK_ENV = {"CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "1",
           "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "PYTHONDONTWRITEBYTECODE": "1"}


def empty_app(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(EMPTY_APP)
    (directory / "cdk.json").write_text('{"app": "%s app.py", "cli-telemetry": false}\n' % sys.executable)
    return directory


def _synth(cwd: Path, outdir: Path, *context: str) -> subprocess.CompletedProcess:
    """The timed synthesis (`.elapsed`, seconds); `context`: `key=value` pairs passed as `-c`."""
    env = {**os.environ, **CDK_ENV}
    context_args = [arg for pair in context for arg in ("-c", pair)]
    started = time.perf_counter()
    done = subprocess.run([*COMMAND, "-o", str(outdir), *context_args], cwd=cwd, env=env, capture_output=True, text=True)
    done.elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cdk synth in {cwd} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    if not list(outdir.glob("**/*.template.json")):
        raise RuntimeError(f"cdk synth in {cwd} wrote no template into {outdir}")
    return done


def run(options: Options, progress: Progress) -> dict:
    progress.say("making sure the configured artifacts are built (python -m model_artifacts build; a no-op when up to date)")
    done = subprocess.run([sys.executable, "-m", "model_artifacts", "build", "--out", "build/artifacts"], cwd=REPO,
                          env={**os.environ, "CI": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the artifacts failed:\n{done.stderr[-3000:]}")
    repetitions = QUICK_REPETITIONS if options.quick else REPETITIONS
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        apps = {"whole app": REPO, "empty app": empty_app(Path(tmp) / "empty-app")}
        outputs, last = iter(range(1000)), {}

        def synth(name):
            def call():
                last[name] = Path(tmp) / f"out-{next(outputs)}"
                seconds = _synth(apps[name], last[name]).elapsed
                progress.say(f"{name}: {seconds:.1f}s")
            return call

        progress.say(f"{'one warm-up each, then ' if not options.quick else ''}{repetitions} alternating repetitions")
        timings = interleaved({name: synth(name) for name in apps}, warmup=0 if options.quick else 1, min_rounds=repetitions,
                              max_rounds=repetitions, budget_s=0, give_up_s=0 if options.quick else GIVE_UP_S, monitor=CpuMonitor)
        assembly = _assembly(last["whole app"])
    samples = timings.samples
    whole, empty = median(samples["whole app"]), median(samples["empty app"])
    return {
        "command": "npx --prefix REPO --no-install cdk synth '**' --quiet --no-notices -o TMP",
        "whole_app_s": samples["whole app"],
        "empty_app_s": samples["empty app"],
        "whole_app_median_s": whole,
        "empty_app_median_s": empty,
        "whole_over_empty": ratio(whole, empty),
        "whole_minus_empty_s": whole - empty,
        "whole_app_assembly": assembly,
        "targets": [target("whole app median / empty app median", ratio(whole, empty), TARGET, short="whole app / empty app")],
        "rounds": {**timings.record(), "described": timings.describe()},
        "notes": [(f"one warm-up each, then alternating repetitions ({timings.describe()}; a round of both during which "
                   "other processes used more than 0.25 cores is set aside and run again)") if not options.quick
                  else "quick mode: one repetition each, no warm-up",
                  f"the whole app: {assembly['templates']} templates, policy validation (cdk-nag), "
                  f"{assembly['model_assets']} model archive(s) staged ({assembly['model_asset_mb']:.0f} MB)"],
    }


def _assembly(outdir: Path) -> dict:
    """What the whole app synthesized: templates, and the model archives it staged as assets."""
    models = list(outdir.glob("asset.*.tar.gz"))  # each model.tar.gz, staged as one file asset
    return {"templates": len(list(outdir.glob("**/*.template.json"))), "model_assets": len(models),
            "model_asset_mb": sum(p.stat().st_size for p in models) / 1e6}


# ------------------------------------------------------------------------------------ report

COLUMNS = ["app", "median s", "runs s", "ratio"]


def table(section: dict):
    rows = [
        ["whole app (`cdk synth '**'`)", f"{section['whole_app_median_s']:.1f}", ", ".join(f"{s:.1f}" for s in section["whole_app_s"]),
         f"{section['whole_over_empty']:.2f}x empty"],
        ["empty CDK app (1 empty stack)", f"{section['empty_app_median_s']:.1f}", ", ".join(f"{s:.1f}" for s in section["empty_app_s"]), "1.00x"],
    ]
    return COLUMNS, rows


def plot(ax, section: dict) -> None:
    names = ["empty app", "whole app"]
    medians = [section["empty_app_median_s"], section["whole_app_median_s"]]
    bars = ax.bar(names, medians, color=["tab:gray", "tab:blue"])
    ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    for index, runs in enumerate([section["empty_app_s"], section["whole_app_s"]]):
        ax.plot([index] * len(runs), runs, "k.", markersize=4)
    ax.set_ylabel("seconds (median, dots: runs)")
    ax.set_title(f"cdk synth, {section['whole_over_empty']:.2f}x an empty app", fontsize=10)
