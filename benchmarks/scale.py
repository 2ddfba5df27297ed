"""Scale: `cdk synth` and the artifact build at 1, 10, 50 and 100 generated models, in one run.

Each size is a generated configuration (benchmarks/generated_config.py: the tiny example classifier, the
repository's three environments and its pipeline) in a temporary directory, never committed. Synthesis is the
CLI a team runs (`npx cdk synth '**'`: every stage, the pipeline, cdk-nag), timed against an empty CDK app
(synth.py's) in the same run; its growth is reported in seconds per model and environment beyond the empty app,
with the largest stack's share of each CloudFormation and CodePipeline quota (stacks/cloudformation_quotas.py).
The build is `python -m model_artifacts build` of models that differ in input size (a real conversion each, one
job per core), cold, then the no-op rebuild of the largest size.
"""
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.build import run_build_cli
from benchmarks.common import REPO, Options, Progress, target
from benchmarks.generated_config import generate_config
from benchmarks.synth import _synth, empty_app
from infra_diff.assembly import read_stacks
from stacks import cloudformation_quotas

NAME = "scale"
TITLE = "Scale: cdk synth and the build at 1 to 100 models"
SIZES, QUICK_SIZES = (1, 10, 50, 100), (1, 3)
ENVIRONMENTS = len(list((REPO / "config" / "environments").glob("*.yaml")))
TARGET_S_PER_MODEL_ENV = 0.2
NOOP_TARGET_S = 5.0


def _build(config_dir: Path, out_dir: Path) -> float:
    started = time.perf_counter()
    run_build_cli([sys.executable, "-m", "model_artifacts", "build", "--config", str(config_dir), "--out", str(out_dir)])
    return time.perf_counter() - started


def _synth_generated(config_dir: Path, artifacts: Path, outdir: Path) -> float:
    """The whole app on a generated configuration: the repository's CLI and app.py, the config from context."""
    done = _synth(REPO, outdir, f"config_dir={config_dir}", f"artifacts_dir={artifacts}")
    if cloudformation_quotas.HEADROOM_EXCEEDED in done.stderr:
        raise RuntimeError(f"a stack is above 80 % of a quota at {config_dir}:\n{done.stderr[-3000:]}")
    return done.elapsed


def _quotas(outdir: Path) -> dict:
    stacks = read_stacks(outdir)
    top = cloudformation_quotas.largest((name, stack.template_file) for name, stack in stacks.items())
    return {"stacks": len(stacks), **{quota: {"stack": u.stack, "used": u.used, "limit": u.limit, "share": u.share} for quota, u in top.items()}}


def run(options: Options, progress: Progress) -> dict:
    sizes = QUICK_SIZES if options.quick else SIZES
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=options.work_dir) as tmp_name:
        tmp = Path(tmp_name)
        empty_s = _synth(empty_app(tmp / "empty-app"), tmp / "empty.out").elapsed
        progress.say(f"empty CDK app: synth {empty_s:.1f}s")
        for models in sizes:
            # Models that differ (input sizes): each converted, and each its own asset in the pipeline's Assets stages.
            config = generate_config(tmp / f"config-{models}", models, distinct=True)
            build_s = _build(config, tmp / f"artifacts-{models}")
            synth_s = _synth_generated(config, tmp / f"artifacts-{models}", tmp / f"out-{models}")
            quotas = _quotas(tmp / f"out-{models}")
            row = {"models": models, "synth_s": synth_s, "synth_s_per_model_env": (synth_s - empty_s) / (models * ENVIRONMENTS),
                   "build_s": build_s, "build_s_per_model": build_s / models, "quotas": quotas}
            rows.append(row)
            progress.say(f"{models} models: synth {synth_s:.1f}s ({row['synth_s_per_model_env']:.3f}s per model and environment "
                         f"beyond the empty app), largest stack {quotas['template resources']['used']} resources; "
                         f"cold build {build_s:.1f}s ({row['build_s_per_model']:.2f}s per model)")
        largest = sizes[-1]
        noop_s = _build(tmp / f"config-{largest}", tmp / f"artifacts-{largest}")
        progress.say(f"no-op rebuild of {largest} models: {noop_s:.2f}s")
    first, last = rows[0], rows[-1]
    marginal = (last["synth_s"] - first["synth_s"]) / ((last["models"] - first["models"]) * ENVIRONMENTS)
    worst_share = max(q["share"] for row in rows for k, q in row["quotas"].items() if k != "stacks")
    return {
        "empty_app_s": empty_s,
        "environments": ENVIRONMENTS,
        "rows": rows,
        "noop_rebuild_s": noop_s,
        "marginal_synth_s_per_model_env": marginal,
        "targets": [
            target(f"synth s per model and environment beyond the empty app, at {last['models']} models",
                   last["synth_s_per_model_env"], TARGET_S_PER_MODEL_ENV, short="synth s / model·env", unit="s"),
            target(f"largest share of a quota of any stack, up to {last['models']} models", worst_share, 0.8, short="largest quota share", unit="%"),
            target(f"no-op rebuild of {last['models']} models", noop_s, NOOP_TARGET_S, short="no-op rebuild", unit="s"),
        ],
        "notes": [f"marginal synth cost from {first['models']} to {last['models']} models: {marginal:.3f}s per model and environment",
                  "models of distinct input sizes: each converted in the runtime's own interpreter (one job per core), "
                  "each its own model archive in the pipeline's Assets stages"],
    }


# ------------------------------------------------------------------------------------ report

COLUMNS = ["models", "synth s", "s per model·env beyond empty", "stacks", "largest stack: resources", "template KB",
           "pipeline stage actions", "cold build s", "build s per model"]


def table(section: dict):
    rows = []
    for row in section["rows"]:
        q = row["quotas"]
        actions = q.get("actions in a pipeline stage")
        rows.append([
            str(row["models"]), f"{row['synth_s']:.1f}", f"{row['synth_s_per_model_env']:.3f}", str(q["stacks"]),
            f"{q['template resources']['used']} ({q['template resources']['share']:.0%})",
            f"{q['template bytes']['used'] / 1000:.0f} ({q['template bytes']['share']:.0%})",
            f"{actions['used']} ({actions['share']:.0%})" if actions else "",
            f"{row['build_s']:.1f}", f"{row['build_s_per_model']:.2f}",
        ])
    rows.append(["empty app", f"{section['empty_app_s']:.1f}", "", "1", "", "", "", "", ""])
    rows.append([f"no-op rebuild ({section['rows'][-1]['models']})", "", "", "", "", "", "", f"{section['noop_rebuild_s']:.2f}", ""])
    return COLUMNS, rows


def plot(ax, section: dict) -> None:
    models = [row["models"] for row in section["rows"]]
    ax.plot(models, [row["synth_s"] for row in section["rows"]], "o-", label="cdk synth")
    ax.plot(models, [row["build_s"] for row in section["rows"]], "s-", label="cold build")
    ax.axhline(section["empty_app_s"], color="tab:gray", linestyle="--", label="empty app synth")
    ax.set_xlabel("models (x3 environments)")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    ax.set_title(f"scale: {section['rows'][-1]['synth_s_per_model_env']:.3f} s per model·env", fontsize=10)
