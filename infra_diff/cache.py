"""The diff cache: synthesized assemblies and `cdk diff` outputs kept between runs of `make diff`.

An assembly is found again only by a key that covers everything its synthesis reads:
- the sources: the base's commit sha, or, for the working tree (uncommitted edits), the content of every file git
  does not ignore plus cdk.context.json (ignored, but the CLI reads it);
- the built artifacts: each model's manifest.json (its archive's sha256 and the build's own cache key). Both sides
  still run the build on every diff, in a directory kept here, so an unchanged model is model_artifacts' no-op
  (`up to date`, under a second) and a changed one is rebuilt;
- the command: config directory, the scoped models;
- the toolchain: the installed packages of every venv the build and the app use, the CDK CLI's installed tree
  (node_modules/.package-lock.json), node's version, and this tool's own code;
- the environment the commands run in, less variables a shell or test runner changes from run to run, and the
  CLI's per-user defaults (~/.cdk.json).
A key that differs in anything means a new synthesis; nothing is ever reused on a guess.

Where: `<git dir>/infra-diff-cache` (outside the working tree, so `git status`, build/ and cdk.out/ are untouched),
or $INFRA_DIFF_CACHE. Clear it by deleting that directory; `--no-cache` bypasses it.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from infra_diff.cdk import Toolchain, offline_env
from infra_diff.git import git

CACHE_ENV = "INFRA_DIFF_CACHE"
FORMAT = 1  # bump when what a cache entry holds changes
KEPT_ASSEMBLIES = 8  # newest first; about 1 MB each once the staged model archives are dropped
KEPT_DIFFS = 200
THIS_TOOL = Path(__file__).resolve().parent
# Shell and test-runner bookkeeping that changes between two runs of the same diff and that no synthesis reads.
VOLATILE_ENV = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "TERM", "COLORTERM", "COLUMNS", "LINES", "DISPLAY", "WINDOWID",
                          "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR", "PS1", "LS_COLORS",
                          "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK", "TMUX", "TMUX_PANE", "STY"})
VOLATILE_PREFIXES = ("PYTEST_", "TERM_", "XDG_SESSION", "GIT_TRACE")
# `make diff BASE=... DIFF_ARGS=...` exports its own arguments; the base's commit is in the key anyway.
MAKE_ARGUMENTS = frozenset({"BASE", "DIFF_ARGS", "MAKEOVERRIDES"})


def default_root(repo: Path) -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).resolve()
    return Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")) / "infra-diff-cache"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    if path.is_symlink():  # git stores the link; what it points to is what the build and the app read
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file())
            return _digest("link", os.readlink(path), *(f"{p.relative_to(path)}\0{_file_digest(p)}" for p in inside))
        return _digest("link", os.readlink(path), _file_digest(path.resolve()) if path.exists() else "dangling")
    if not path.exists():
        return "absent"
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def working_tree_digest(repo: Path) -> str:
    """The content of every file of the working tree that git does not ignore (tracked or not; a deleted one is
    'absent'), and cdk.context.json."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    paths = sorted({p for p in listed.split("\0") if p} | {"cdk.context.json"})
    return _digest(*(f"{p}\0{_file_digest(repo / p)}" for p in paths))


def _installed(venv: Path) -> List[str]:
    """A venv's interpreter and installed distributions (name-version), as pip records them."""
    found = [f"{venv.name}: {(venv / 'pyvenv.cfg').read_text() if (venv / 'pyvenv.cfg').exists() else 'no pyvenv.cfg'}"]
    found += sorted(p.name for p in venv.glob("lib/python*/site-packages/*.dist-info"))
    found += sorted(p.name for p in venv.glob("lib/python*/site-packages/*.egg-info"))
    return found


def toolchain_digest(tools: Toolchain) -> str:
    """What the build and synthesis run with, other than the sources: venvs, CDK CLI, node, this tool."""
    node_modules = tools.cdk.parent.parent
    lock = node_modules / ".package-lock.json"  # npm's record of the tree actually installed
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    venvs = [tools.python.parent.parent, tools.mxnet_python.parent.parent,
             *sorted(p for p in tools.runtimes_dir.glob("*") if (p / "pyvenv.cfg").exists())]
    parts = [f"format {FORMAT}", f"node {node}", f"cli {_file_digest(lock)}", f"python {sys.version}"]
    parts += [line for venv in venvs for line in _installed(venv)]
    parts += [f"{p.name} {_file_digest(p)}" for p in sorted(THIS_TOOL.glob("*.py"))]
    return _digest(*parts)


def environment_digest() -> str:
    """The commands' environment, and the CDK CLI's per-user defaults (~/.cdk.json, context included)."""
    env = {k: v for k, v in offline_env().items()
           if k not in VOLATILE_ENV | MAKE_ARGUMENTS and not k.startswith(VOLATILE_PREFIXES)}
    return _digest(json.dumps(env, sort_keys=True), _file_digest(Path.home() / ".cdk.json"))


def artifacts_digest(artifacts: Path) -> str:
    """Each built model's manifest (archive sha256, build cache key, runtime), by model directory."""
    manifests = sorted(artifacts.glob("*/manifest.json"))
    return _digest(*(f"{m.parent.name}\0{_file_digest(m)}" for m in manifests))


class DiffCache:
    """Assemblies by key under `root/assemblies`, the artifacts of each side under `root/artifacts/<side>`, and
    rendered `cdk diff` outputs under `root/diffs`. One diff at a time per cache (a lock), so two runs never build
    into the same artifact directory at once."""

    def __init__(self, root: Path, tools: Toolchain):
        self.root = root
        self._toolchain = toolchain_digest(tools)
        self._environment = environment_digest()

    def artifacts_dir(self, side: str) -> Path:
        return self.root / "artifacts" / side

    def seed_artifacts(self, side: str, from_side: str) -> None:
        """Each model `side` has never built, copied from `from_side`: its build then finds it up to date when the
        inputs are the same (model_artifacts checks the build key and the archive's sha256) and rebuilds it otherwise,
        so a first diff of a config change converts each model once, not once per side."""
        source, target = self.artifacts_dir(from_side), self.artifacts_dir(side)
        for built in source.glob("*/manifest.json"):
            if not (target / built.parent.name).exists():
                shutil.copytree(built.parent, target / built.parent.name)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def key(self, source: str, artifacts: Path, config: str, only_models: Optional[Sequence[str]]) -> str:
        """`source`: 'commit <sha>' or 'tree <working_tree_digest>'."""
        scope = "all" if only_models is None else ",".join(only_models)
        return _digest(source, artifacts_digest(artifacts), f"config {config}", f"models {scope}", self._toolchain, self._environment)

    def assembly(self, key: str) -> Optional[Path]:
        found = self.root / "assemblies" / key
        if not (found / "manifest.json").is_file():
            return None
        os.utime(found)  # most recently used: kept longest
        return found

    def store_assembly(self, key: str, outdir: Path) -> Path:
        """Moves a finished synthesis into the cache; the staged model archives are dropped (the diff reads the
        asset manifests, never the files)."""
        for staged in outdir.glob("asset.*"):
            shutil.rmtree(staged) if staged.is_dir() and not staged.is_symlink() else staged.unlink()
        target = self.root / "assemblies" / key
        incoming = self.root / "incoming" / key
        for stale in (target, incoming):
            shutil.rmtree(stale, ignore_errors=True)
        incoming.parent.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(outdir), str(incoming))  # a copy when the temp dir is on another file system
        os.rename(incoming, target)  # then one rename: an interrupted copy is never found under its key
        _keep_newest(target.parent, KEPT_ASSEMBLIES)
        return target

    def diff(self, base_key: str, head_key: str, stack: str) -> Optional[str]:
        found = self._diff_file(base_key, head_key, stack)
        return found.read_text() if found.is_file() else None

    def store_diff(self, base_key: str, head_key: str, stack: str, output: str) -> None:
        target = self._diff_file(base_key, head_key, stack)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(output)
        _keep_newest(target.parent, KEPT_DIFFS)

    def _diff_file(self, base_key: str, head_key: str, stack: str) -> Path:
        # Both keys fix both assemblies byte for byte, and the CLI is in them: the same three give the same output.
        return self.root / "diffs" / f"{_digest(base_key, head_key, stack)}.txt"


def _keep_newest(directory: Path, count: int) -> None:
    entries = sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[count:]:
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
