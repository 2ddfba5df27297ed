"""CLI: `python -m infra_diff [--base REF] [--config config] [--markdown] [--no-cache]` (or `make diff BASE=REF`)."""
import argparse
import contextlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from infra_diff import ERROR, UsageError
from infra_diff.assembly import ADDED, CHANGED, UNCHANGED, StackComparison, compare, exit_status, read_stacks
from infra_diff.cache import DiffCache, default_root, working_tree_digest
from infra_diff.cdk import Toolchain
from infra_diff.git import DEFAULT_BASE, changed_files, describe_head, exists_in_commit, repo_root, resolve_base, worktree
from infra_diff.hazards import cross_stack_move_hazards
from infra_diff.report import change_summary, overview, render, section, summary
from infra_diff.scope import Scope, model_file_prefix, scope_of


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra_diff", description="Offline cdk diff of every stack between a git "
                                     "ref and the working tree. Exit status: 0 no differences, 1 differences, 2 error.")
    parser.add_argument("--base", help=f"git ref to compare against (default: {DEFAULT_BASE} if it exists, else HEAD)")
    parser.add_argument("--config", default="config", help="config directory, relative to each checkout (default: config)")
    parser.add_argument("--markdown", action="store_true", help="Markdown for a PR comment: one collapsible ```diff block per stack")
    parser.add_argument("--no-cache", action="store_true", help="synthesize both sides afresh in temporary directories, and "
                        "neither read nor write the cache (<git dir>/infra-diff-cache, or $INFRA_DIFF_CACHE)")
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
    # A config directory outside the repository is in neither side's key (commit, working tree): no cache then.
    cache = None if args.no_cache or model_file_prefix(args.config) is None else DiffCache(default_root(repo), tools)
    with tempfile.TemporaryDirectory(prefix="infra-diff-") as tmp_name, (cache.locked() if cache else contextlib.nullcontext()):
        tmp = Path(tmp_name)
        with worktree(repo, sha, tmp / "base") as base_checkout:
            base = _side(tools, cache, "base", f"base {sha[:7]}", lambda: f"commit {sha}", base_checkout, args.config, tmp,
                         **_scoped(scope, lambda name: exists_in_commit(repo, sha, _model_file(args.config, name))))
        if cache:
            cache.seed_artifacts("head", from_side="base")
        # The working tree has uncommitted edits: its key is the content of its files.
        head_side = _side(tools, cache, "head", "working tree", lambda: f"working tree {working_tree_digest(repo)}", repo,
                          args.config, tmp, **_scoped(scope, lambda name: (repo / _model_file(args.config, name)).is_file()))
        comparisons = compare(read_stacks(base.outdir), read_stacks(head_side.outdir))
        moves = cross_stack_move_hazards(comparisons)
        sections = [section(c, _cdk_diff(tools, cache, c, base, head_side, tmp), moves.get(c.name, []), scoped=not scope.full)
                    for c in comparisons if c.status != UNCHANGED]
    print(f"done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(render(header, sections, summary(comparisons, scope.summary_note()), args.markdown, scope=scope.describe(),
                 table=overview(comparisons) if args.markdown else "", changes=change_summary(comparisons, args.markdown)), end="")
    return exit_status(comparisons)


@dataclass(frozen=True)
class Side:
    outdir: Path  # the synthesized assembly
    key: str  # its cache key ('' without the cache)


def _side(tools: Toolchain, cache: Optional[DiffCache], side: str, label: str, source: Callable[[], str], checkout: Path,
          config: str, tmp: Path, only_models=None, build_models=None) -> Side:
    """Build (in the cache's artifact directory, a no-op for each unchanged model), then synthesize unless the cache
    holds an assembly with the same key. `source` names the side's sources ('commit <sha>', 'working tree <digest>')."""
    artifacts = cache.artifacts_dir(side) if cache else tmp / f"{side}-artifacts"
    outdir = tmp / f"{side}.out"
    if cache is None:
        tools.build_and_synth(checkout, config, artifacts, outdir, label, only_models, build_models)
        return Side(outdir, "")
    before = source()
    tools.build(checkout, config, artifacts, label, only_models, build_models)
    key = cache.key(before, artifacts, config, only_models)
    cached = cache.assembly(key)
    if cached is not None:
        kind, identity = before.rsplit(" ", 1)
        print(f"{side}: cached assembly for {kind} {identity[:12]} (key {key[:12]})", file=sys.stderr)
        return Side(cached, key)
    tools.synth(checkout, config, artifacts, outdir, label, only_models)
    if source() != before:  # edited while it was built: this assembly may be of neither content, so not kept
        print(f"{side}: the sources changed during the synthesis; not cached", file=sys.stderr)
        return Side(outdir, "")
    return Side(cache.store_assembly(key, outdir), key)


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


def _cdk_diff(tools: Toolchain, cache: Optional[DiffCache], comparison: StackComparison, base: Side, head: Side, tmp: Path) -> str:
    """cdk diff's own rendering, for stacks the working tree has; a removed stack is described from its template.
    A rendering of the same two assemblies is taken from the cache."""
    if comparison.status == ADDED:
        empty = tmp / "empty.template.json"
        empty.write_text("{}")
        base_template = empty
    elif comparison.status == CHANGED and comparison.base.template != comparison.head.template:
        base_template = comparison.base.template_file
    else:
        return ""
    cache = cache if base.key and head.key else None  # a side synthesized but not cached has no key to file it under
    if cache is not None:
        cached = cache.diff(base.key, head.key, comparison.name)
        if cached is not None:
            return cached
    output = tools.diff(head.outdir, base_template, comparison.name)
    if cache is not None:
        cache.store_diff(base.key, head.key, comparison.name, output)
    return output


if __name__ == "__main__":
    sys.exit(main())
