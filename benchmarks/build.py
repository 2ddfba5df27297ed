"""The artifact build: a cold build vs a no-op rebuild (the content-addressed cache), and our
reproducible tarball writer vs `tar czf` of the same files (both gzip level 6), in MB/s (10^6 bytes).

The build is the CLI a team runs: `python -m model_artifacts convert --example example-resnet-50
--input-shape 1 3 224 224 --recipe optimized --allow-newer-torch --out DIR`, timed as a subprocess
(interpreter start included, as a user sees it). Cold = an empty DIR; no-op = the same command again.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, CpuMonitor, Options, Progress, interleaved, median, ratio, target

NAME = "build"
TITLE = "Artifact build: cold vs no-op rebuild; tarball writer vs tar czf"
FULL = {"example": "example-resnet-50", "input_shape": [1, 3, 224, 224], "recipe": "optimized"}
QUICK = {"example": "example-resnet-tiny", "input_shape": [1, 3, 64, 64], "recipe": "optimized"}
NOOP_RUNS, COMPRESSION_RUNS = 3, 3
ARCHIVE_MEMBERS = ("code/inference.py", "code/request_handling.py", "code/requirements.txt", "model.pt")


def artifact_dir(options: Options) -> Path:
    """Where the benchmarks keep the model they build and serve (git-ignored build/ directory)."""
    return options.work_dir / ("artifact-quick" if options.quick else "artifact-resnet-50-optimized")


def convert_cli(example: str, input_shape, recipe: str, out_dir: Path, *flags: str):
    """`python -m model_artifacts convert` of an example model, the command a team runs."""
    return [sys.executable, "-m", "model_artifacts", "convert", "--example", example, "--input-shape", *map(str, input_shape),
            "--recipe", recipe, *flags, "--out", str(out_dir)]


def convert_command(options: Options, out_dir: Path):
    sizes = QUICK if options.quick else FULL
    return convert_cli(sizes["example"], sizes["input_shape"], sizes["recipe"], out_dir, "--allow-newer-torch")


def _run_convert(options: Options, out_dir: Path) -> subprocess.CompletedProcess:
    return run_build_cli(convert_command(options, out_dir))


def run_build_cli(command) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "1"}  # the build tool's one-line-per-model output
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the build CLI failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def ensure_artifact(options: Options, progress: Progress) -> Path:
    """The benchmark model's model.tar.gz, built unless the cache says it is up to date."""
    out_dir = artifact_dir(options)
    progress.say(f"artifact: {' '.join(convert_command(options, out_dir)[1:])} (a no-op when up to date)")
    _run_convert(options, out_dir)
    return out_dir


def run(options: Options, progress: Progress) -> dict:
    out_dir = artifact_dir(options)
    shutil.rmtree(out_dir, ignore_errors=True)
    progress.say(f"cold build into an empty {out_dir.relative_to(REPO) if out_dir.is_relative_to(REPO) else out_dir}")
    watch = CpuMonitor().start()
    started = time.perf_counter()
    _run_convert(options, out_dir)
    cold_s = time.perf_counter() - started
    cold_other_cores = watch.other_cores()
    manifest = json.loads((out_dir / "manifest.json").read_text())
    progress.say(f"cold build: {cold_s:.1f}s; now {NOOP_RUNS} no-op rebuilds")
    noop = []
    written = (out_dir / "model.tar.gz").stat().st_mtime_ns
    for _ in range(NOOP_RUNS):
        started = time.perf_counter()
        done = _run_convert(options, out_dir)
        noop.append(time.perf_counter() - started)
        if (out_dir / "model.tar.gz").stat().st_mtime_ns != written:
            raise RuntimeError(f"the second identical build was not a no-op (it rewrote model.tar.gz):\n{done.stderr[-2000:]}")
    compression = _compression(out_dir / "model.tar.gz", options, progress)
    noop_s = median(noop)
    return {
        "model": (QUICK if options.quick else FULL)["example"],
        "recipe": manifest["recipe"],
        "artifact_bytes": manifest["size_bytes"],
        "cold_s": cold_s,
        "cold_other_cores": cold_other_cores,
        "noop_s": noop,
        "noop_median_s": noop_s,
        "cold_over_noop": ratio(cold_s, noop_s),
        "compression": compression,
        "targets": [
            target("no-op rebuild / cold build (the cache)", ratio(noop_s, cold_s), None, short="no-op / cold"),
            target("our tarball writer MB/s / tar czf MB/s", compression["ours_over_tar"], None, better="higher",
                   short="our MB/s / tar czf MB/s"),
        ],
        "notes": ["times are wall clock of the CLI as a subprocess, interpreter start included",
                  "compression: the artifact's own files (model.pt and code/), gzip level 6 both, "
                  f"interleaved, median of {compression['rounds']['described']}",
                  f"other processes used {cold_other_cores} cores during the cold build (one run)"],
    }


def _compression(artifact: Path, options: Options, progress: Progress) -> dict:
    from model_artifacts.packaging import write_reproducible_tarball

    with tempfile.TemporaryDirectory(prefix="bench-tar-", dir=options.work_dir) as tmp:
        source = Path(tmp) / "files"
        with tarfile.open(artifact) as archive:
            archive.extractall(source, filter="data")
        files = {name: source / name for name in ARCHIVE_MEMBERS}
        total = sum(path.stat().st_size for path in files.values())
        ours, theirs = Path(tmp) / "ours.tar.gz", Path(tmp) / "tar.tar.gz"
        progress.say(f"compression: {total / 1e6:.1f} MB, {COMPRESSION_RUNS} interleaved runs each of ours and tar czf")

        def tar_czf():
            subprocess.run(["tar", "czf", str(theirs), "-C", str(source), *ARCHIVE_MEMBERS], check=True)

        timings = interleaved({"ours": lambda: write_reproducible_tarball(ours, files), "tar czf": tar_czf}, warmup=0,
                              min_rounds=COMPRESSION_RUNS, max_rounds=COMPRESSION_RUNS, budget_s=0, give_up_s=60, monitor=CpuMonitor)
        samples = timings.samples
        ours_mbs = total / 1e6 / median(samples["ours"])
        tar_mbs = total / 1e6 / median(samples["tar czf"])
        return {
            "input_bytes": total,
            "ours_s": samples["ours"],
            "tar_s": samples["tar czf"],
            "ours_mb_per_s": ours_mbs,
            "tar_mb_per_s": tar_mbs,
            "ours_bytes": ours.stat().st_size,
            "tar_bytes": theirs.stat().st_size,
            "ours_over_tar": ratio(ours_mbs, tar_mbs),
            "rounds": {**timings.record(), "described": timings.describe()},
            "tar_version": subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        }


# ------------------------------------------------------------------------------------ report

COLUMNS = ["measure", "value", "ratio"]


def table(section: dict):
    c = section["compression"]
    rows = [
        [f"cold build ({section['model']}, {section['recipe']})", f"{section['cold_s']:.1f} s", ""],
        [f"no-op rebuild (median of {len(section['noop_s'])})", f"{section['noop_median_s']:.2f} s",
         f"{section['cold_over_noop']:.0f}x faster than cold"],
        [f"our tarball writer ({c['input_bytes'] / 1e6:.1f} MB in, {c['ours_bytes'] / 1e6:.1f} MB out)",
         f"{c['ours_mb_per_s']:.1f} MB/s", f"{c['ours_over_tar']:.2f}x tar czf"],
        [f"tar czf, same files ({c['tar_bytes'] / 1e6:.1f} MB out)", f"{c['tar_mb_per_s']:.1f} MB/s", ""],
    ]
    return COLUMNS, rows


def plot(ax, section: dict) -> None:
    c = section["compression"]
    bars = ax.bar(["cold build", "no-op rebuild"], [section["cold_s"], section["noop_median_s"]], color=["tab:red", "tab:green"])
    ax.bar_label(bars, fmt="%.2f s", fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title(f"Artifact build ({section['model']})", fontsize=10)
    twin = ax.inset_axes([0.55, 0.45, 0.42, 0.45])
    bars = twin.bar(["ours", "tar czf"], [c["ours_mb_per_s"], c["tar_mb_per_s"]], color=["tab:blue", "tab:gray"])
    twin.bar_label(bars, fmt="%.0f", fontsize=7)
    twin.set_title("gzip MB/s", fontsize=8)
    twin.tick_params(labelsize=7)
