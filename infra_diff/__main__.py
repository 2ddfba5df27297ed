"""CLI: `python -m infra_diff [--base REF] [--config config] [--markdown]` (or `make diff BASE=REF`)."""
import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from infra_diff import ERROR, UsageError
from infra_diff.assembly import ADDED, CHANGED, UNCHANGED, StackComparison, compare, exit_status, read_stacks
from infra_diff.cdk import Toolchain
from infra_diff.git import DEFAULT_BASE, describe_head, repo_root, resolve_base, worktree
from infra_diff.report import render, section, summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra_diff", description="Offline cdk diff of every stack between a git "
                                     "ref and the working tree. Exit status: 0 no differences, 1 differences, 2 error.")
    parser.add_argument("--base", help=f"git ref to compare against (default: {DEFAULT_BASE} if it exists, else HEAD)")
    parser.add_argument("--config", default="config", help="config directory, relative to each checkout (default: config)")
    parser.add_argument("--markdown", action="store_true", help="Markdown for a PR comment: one collapsible ```diff block per stack")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups, as Ctrl-C does
    try:
        return run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        print("\ninterrupted; the temporary worktree and files were removed", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    repo = repo_root(Path.cwd())
    tools = Toolchain.of(repo)
    ref, sha = resolve_base(repo, args.base)
    head = describe_head(repo)
    header = f"cdk diff (offline): base {ref} ({sha[:7]}) -> {head}"
    print(header, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="infra-diff-") as tmp_name:
        tmp = Path(tmp_name)
        with worktree(repo, sha, tmp / "base") as base_checkout:
            tools.build_and_synth(base_checkout, args.config, tmp / "base-artifacts", tmp / "base.out", f"base {sha[:7]}")
        tools.build_and_synth(repo, args.config, tmp / "head-artifacts", tmp / "head.out", "working tree")
        comparisons = compare(read_stacks(tmp / "base.out"), read_stacks(tmp / "head.out"))
        sections = [section(c, _cdk_diff(tools, c, tmp)) for c in comparisons if c.status != UNCHANGED]
    print(f"done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(render(header, sections, summary(comparisons), args.markdown), end="")
    return exit_status(comparisons)


def _cdk_diff(tools: Toolchain, comparison: StackComparison, tmp: Path) -> str:
    """cdk diff's own rendering, for stacks the working tree has; a removed stack is described from its template."""
    if comparison.status == ADDED:
        empty = tmp / "empty.template.json"
        empty.write_text("{}")
        return tools.diff(tmp / "head.out", empty, comparison.name)
    if comparison.status == CHANGED and comparison.base.template != comparison.head.template:
        return tools.diff(tmp / "head.out", comparison.base.template_file, comparison.name)
    return ""


if __name__ == "__main__":
    sys.exit(main())
