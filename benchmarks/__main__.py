"""python -m benchmarks [latency serving synth build concurrency scale diff] [--quick] [--out DIR]: see benchmarks/README.md."""
import argparse
import sys
import time
from pathlib import Path
from typing import List

from benchmarks import build, concurrency, diff, latency, report, scale, serving, synth
from benchmarks.common import DEFAULT_WORK_DIR, REPO, CpuMonitor, Options, Progress, environment, wait_until_quiet

# Run order: build first (it builds the model that serving then finds up to date).
MODULES = {"build": build, "latency": latency, "serving": serving, "concurrency": concurrency, "synth": synth, "scale": scale,
           "diff": diff}
REPORT_ORDER = ["latency", "serving", "synth", "build", "concurrency", "scale", "diff"]  # the numbering of benchmarks/README.md
DEFAULT_OUT = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=sys.modules["benchmarks"].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help=f"any of {', '.join(REPORT_ORDER)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (tests); not representative")
    parser.add_argument("--out", type=Path, help="where results.json, README.md and results.png go "
                        "(default: benchmarks/, or build/bench/quick with --quick)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="scratch space (default: build/bench)")
    parser.add_argument("--quiet-wait", type=float, default=30.0, metavar="SECONDS",
                        help="before each benchmark, wait up to this long for other processes to leave the CPU (default 30)")
    parser.add_argument("--server-wait", type=float, default=600.0, metavar="SECONDS",
                        help="wait up to this long for another TorchServe on the machine to stop (default 600)")
    return parser


def main(argv: List[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(REPORT_ORDER)}")
    chosen = [name for name in MODULES if name in (args.benchmarks or REPORT_ORDER)]
    out_dir = args.out or (args.work_dir / "quick" if args.quick else DEFAULT_OUT)
    options = Options(quick=args.quick, work_dir=args.work_dir.resolve(), quiet_wait_s=args.quiet_wait, server_wait_s=args.server_wait)
    options.work_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))  # config, model_artifacts, local_serving

    started = time.perf_counter()
    sections, failures = {}, []
    for index, name in enumerate(chosen, start=1):
        module = MODULES[name]
        progress = Progress(name)
        progress.say(f"benchmark {index}/{len(chosen)}: {module.TITLE}{' (quick)' if options.quick else ''}")
        quiet = wait_until_quiet(options.quiet_wait_s, progress) if options.quiet_wait_s > 0 else {}
        env = environment()
        monitor = CpuMonitor().start()
        begun = time.perf_counter()
        try:
            section = module.run(options, progress)
        except Exception as error:  # one benchmark failing must not lose the others' results
            progress.say(f"FAILED: {error}")
            failures.append(f"{name}: {error}")
            continue
        other = section.pop("other_cores", None)
        section = {"title": module.TITLE, "quick": options.quick, "environment": env, "duration_s": time.perf_counter() - begun,
                   "contention": {**quiet, "other_cores": other if other is not None else monitor.other_cores()}, **section}
        sections[name] = section
        for entry in section["targets"]:
            if entry["verdict"]:
                progress.say(f"{entry['what']}: {report.format_ratio(entry['ratio'], entry.get('unit', 'x'))} "
                             f"(target {report.format_target(entry)}) {entry['verdict']}")
        progress.say(f"done in {section['duration_s']:.0f}s")

    if sections:
        results = report.merge(report.load(out_dir), sections, REPORT_ORDER)
        report.save(out_dir, results)
        report.write_readme(out_dir / report.README_FILE, report.render(results, MODULES, REPORT_ORDER))
        report.chart(out_dir / report.CHART_FILE, results, MODULES, REPORT_ORDER)
        print(f"[bench] {len(sections)} benchmark(s) in {time.perf_counter() - started:.0f}s; results in "
              f"{out_dir / report.RESULTS_FILE}, {out_dir / report.README_FILE}, {out_dir / report.CHART_FILE}", file=sys.stderr)
    for failure in failures:
        print(f"[bench] failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
