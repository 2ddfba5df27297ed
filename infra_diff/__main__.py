"""CLI: `python -m infra_diff [--base REF] [--config config] [--markdown]` (or `make diff BASE=REF`)."""
import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

from infra_diff import ERROR, UsageError
from infra_diff.assembly import ADDED, CHANGED, UNCHANGED, StackComparison, compare, exit_status, read_stacks
from infra_diff.cdk import Toolchain
from infra_diff.git import DEFAULT_BASE, changed_files, describe_head, exists_in_commit, repo_root, resolve_base, worktree
from infra_diff.hazards import cross_stack_move_hazards
from infra_diff.report import overview, render, section, summary
from infra_diff.scope import Scope, model_file_prefix, scope_of


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
    scope = scope_of(changed_files(repo, sha), args.config, _configured_models(repo, args.config))
    print(header, scope.describe(), sep="\n", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="infra-diff-") as tmp_name:
        tmp = Path(tmp_name)
        with worktree(repo, sha, tmp / "base") as base_checkout:
            tools.build_and_synth(base_checkout, args.config, tmp / "base-artifacts", tmp / "base.out", f"base {sha[:7]}",
                                  **_scoped(scope, lambda name: exists_in_commit(repo, sha, _model_file(args.config, name))))
        tools.build_and_synth(repo, args.config, tmp / "head-artifacts", tmp / "head.out", "working tree",
                              **_scoped(scope, lambda name: (repo / _model_file(args.config, name)).is_file()))
        comparisons = compare(read_stacks(tmp / "base.out"), read_stacks(tmp / "head.out"))
        moves = cross_stack_move_hazards(comparisons)
        sections = [section(c, _cdk_diff(tools, c, tmp), moves.get(c.name, []), scoped=not scope.full)
                    for c in comparisons if c.status != UNCHANGED]
    print(f"done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(render(header, sections, summary(comparisons, scope.summary_note()), args.markdown, scope=scope.describe(),
                 table=overview(comparisons) if args.markdown else ""), end="")
    return exit_status(comparisons)


def _model_file(config: str, name: str) -> str:
    return f"{model_file_prefix(config)}{name}.yaml"


def _configured_models(repo: Path, config: str) -> List[str]:
    """The working tree's models (the stems of <config>/models/*.yaml)."""
    return [path.stem for path in (repo / config / "models").glob("*.yaml")]


def _scoped(scope: Scope, present: Callable[[str], bool]) -> dict:
    """build_and_synth's arguments for one side: nothing for a full diff; else every changed model to synthesize
    (a name the side lacks is ignored) and the ones this side has to build."""
    if scope.full:
        return {}
    return {"only_models": scope.models, "build_models": [name for name in scope.models if present(name)]}


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
