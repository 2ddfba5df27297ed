"""CLI for the build step.

  python -m model_artifacts build   [--config config] [--out build/artifacts] [--model NAME] [--runtime-export DIR] [--jobs N]
      every model configured in config/models/*.yaml, for its serving runtime, up to N at once (default: one per core)
  python -m model_artifacts convert --factory pkg.module:function --weights model.pth --input-shape 1 3 224 224
                                    --recipe optimized [--runtime-torch 2.6.0] --out DIR
      one model of your own, without a config file

An unchanged rebuild is a no-op; models that differ only in their name are converted once and the artifact
copied; `--allow-newer-torch` builds for a runtime with an older torch anyway. A model that fails to build
does not stop the others: every failure is listed at the end, and the exit status is 2.
"""
import argparse
import os
import sys
from pathlib import Path
from typing import List, get_args

from config.schema import Recipe

DEFAULT_OUT = Path("build/artifacts")
RECIPES = tuple(recipe for recipe in get_args(Recipe) if recipe != "auto")  # convert names one model's recipe


def _ensure_fixed_hash_seed(argv: List[str]) -> None:
    # torch.jit.script output depends on Python's string hashing; fix it so builds are byte-identical.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "model_artifacts", *argv])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_artifacts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build model.tar.gz + manifest.json for each configured model")
    build.add_argument("--config", default="config", help="config directory (default: config)")
    build.add_argument("--model", action="append", help="only this model (repeatable)")
    build.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N",
                       help="build up to N models at once, each in its own interpreter (default: the cores this process may use)")
    build.add_argument(
        "--runtime-export",
        help="package TorchScript converted by the serving runtime's own torch (DIR/<model>/ from "
        "`python -m model_artifacts.runtime_export`, run in the runtime's image) instead of converting here",
    )
    convert = commands.add_parser("convert", help="build one model of your own without a config file")
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument("--factory", help="package.module:function returning a torch.nn.Module")
    source.add_argument("--example", choices=("example-resnet", "example-resnet-tiny", "example-resnet-50"))
    convert.add_argument("--weights", type=Path, help="state_dict (.pth), loaded with torch.load(weights_only=True)")
    convert.add_argument("--input-shape", type=int, nargs=4, required=True, metavar=("N", "C", "H", "W"))
    convert.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16", "bfloat16"))
    convert.add_argument("--recipe", required=True, choices=RECIPES)
    convert.add_argument("--runtime-torch", default="2.6.0", help="torch of the serving runtime (default 2.6.0; EIA: 1.3.1 or 1.5.1)")
    convert.add_argument("--name", default="model")
    for command in (build, convert):
        command.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: build/artifacts)")
        command.add_argument("--allow-newer-torch", action="store_true",
                             help="build although this torch is newer than the runtime's (recorded in the manifest)")
    return parser


def _jobs(value: str) -> int:
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of models to build at once, at least 1")
    return jobs


def _convert_request(args: argparse.Namespace):
    from model_artifacts.requests import BuildRequest

    eia = args.recipe.startswith("eia-")
    return BuildRequest(
        name=args.name,
        source=args.factory or args.example,
        example=args.example,
        factory=args.factory,
        weights=args.weights,
        input_shape=tuple(args.input_shape),
        input_dtype=args.dtype,
        recipe=args.recipe,
        target_framework="pytorch",
        target_framework_version=args.runtime_torch,
        target_profile="eia" if eia else "cpu",
        image_preprocessing={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize_short_side": None},
        allow_newer_torch=args.allow_newer_torch,
    )


def main(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    _ensure_fixed_hash_seed(argv)
    sys.path.insert(0, os.getcwd())  # model factories are imported from the working directory

    from config import ConfigError, load_config
    from model_artifacts.build import build_all, build_artifact
    from model_artifacts.progress import make_reporter
    from model_artifacts.requests import build_requests

    reporter = make_reporter()
    try:
        if args.command == "convert":
            manifest = build_artifact(_convert_request(args), Path(args.out), reporter)
            print(f"{args.name}: {Path(args.out) / manifest['artifact']} sha256={manifest['sha256']}")
            return 0
        config_dir = Path(args.config)
        requests = build_requests(load_config(config_dir), only=args.model, runtime_export_dir=args.runtime_export,
                                  allow_newer_torch=args.allow_newer_torch, weights_root=config_dir.resolve().parent)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        outcomes = build_all(requests, Path(args.out), args.jobs, reporter)
    except KeyboardInterrupt:  # the running conversions got the signal too; no further one was started
        print("error: interrupted; the models built so far are kept, a rebuild continues from there", file=sys.stderr)
        return 130
    for outcome in outcomes:
        if outcome.manifest is not None:
            print(f"{outcome.name}: {outcome.out_dir / outcome.manifest['artifact']} sha256={outcome.manifest['sha256']}")
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    for outcome in failed:
        reason = outcome.error if outcome.error.startswith(f"model {outcome.name!r}") else f"model {outcome.name!r}: {outcome.error}"
        print(f"error: {reason}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(outcomes)} models failed to build: {', '.join(o.name for o in failed)}"
              f"{'' if len(failed) == len(outcomes) else '; the others are built'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
