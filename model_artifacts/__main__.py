"""CLI: `python -m model_artifacts build [--config config] [--out build/artifacts] [--model NAME]`."""
import argparse
import os
import sys
from pathlib import Path
from typing import List

DEFAULT_OUT = Path("build/artifacts")


def _ensure_fixed_hash_seed(argv: List[str]) -> None:
    # torch.jit.script output depends on Python's string hashing; fix it so builds are byte-identical.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "model_artifacts", *argv])


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_artifacts", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build model.tar.gz + manifest.json for each configured model")
    build.add_argument("--config", default="config", help="config directory (default: config)")
    build.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: build/artifacts)")
    build.add_argument("--model", action="append", help="only this model (repeatable)")
    build.add_argument(
        "--runtime-export",
        help="package TorchScript converted by the serving runtime's own torch (DIR/<model>/ from "
        "`python -m model_artifacts.runtime_export`, run in the runtime's image) instead of converting here",
    )
    args = parser.parse_args(argv)
    _ensure_fixed_hash_seed(argv)

    from config import ConfigError, load_config
    from model_artifacts.build import build_artifact, stderr_progress
    from model_artifacts.requests import build_requests

    try:
        requests = build_requests(load_config(args.config), only=args.model, runtime_export_dir=args.runtime_export)
        for request in requests:
            manifest = build_artifact(request, Path(args.out) / request.name, progress=stderr_progress)
            print(f"{request.name}: {Path(args.out) / request.name / manifest['artifact']} sha256={manifest['sha256']}")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
