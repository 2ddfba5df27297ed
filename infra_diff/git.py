"""The git side: resolving the base ref and a temporary, detached worktree that is always removed."""
import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from infra_diff import UsageError

DEFAULT_BASE = "origin/main"


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def repo_root(start: Path) -> Path:
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"not inside a git repository: {start}")
    return Path(result.stdout.strip())


def commit_of(repo: Path, ref: str) -> Optional[str]:
    result = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=repo, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def resolve_base(repo: Path, ref: Optional[str]) -> Tuple[str, str]:
    """(ref, full sha); no ref means origin/main when it exists, else HEAD."""
    if ref is None:
        ref = DEFAULT_BASE if commit_of(repo, DEFAULT_BASE) else "HEAD"
    sha = commit_of(repo, ref)
    if sha is None:
        hint = "HEAD~1 or origin/main" if commit_of(repo, DEFAULT_BASE) else "HEAD~1 (this clone has no origin/main)"
        raise UsageError(f"unknown git ref '{ref}'; try {hint}")
    return ref, sha


def describe_head(repo: Path) -> str:
    """'working tree (abc1234)', plus '+ uncommitted changes' when `git status` lists any."""
    sha = commit_of(repo, "HEAD")
    label = f"working tree ({sha[:7]}" if sha else "working tree (no commits yet"
    return label + (" + uncommitted changes)" if git(repo, "status", "--porcelain") else ")")


def changed_files(repo: Path, sha: str) -> List[str]:
    """Every path (relative to the repository root) that differs between commit `sha` and the working tree:
    committed, staged and unstaged changes (a rename counts as both of its paths, a deletion as its path) and
    untracked files that .gitignore does not exclude."""
    paths = set()
    for args in (["diff", "--no-renames", "--no-ext-diff", "--name-only", "-z", sha, "--"],
                 ["ls-files", "--others", "--exclude-standard", "-z"]):
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        if result.returncode != 0:
            raise UsageError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
        paths.update(path for path in result.stdout.split("\0") if path)  # -z: names as they are, unquoted
    return sorted(paths)


def exists_in_commit(repo: Path, sha: str, path: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{sha}:{path}"], cwd=repo, capture_output=True).returncode == 0


@contextlib.contextmanager
def worktree(repo: Path, sha: str, path: Path) -> Iterator[Path]:
    """A detached worktree of `sha` at `path`, removed on exit (errors and Ctrl-C included)."""
    git(repo, "worktree", "add", "--detach", "--quiet", str(path), sha)
    try:
        yield path
    finally:
        removed = subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=repo, capture_output=True)
        if removed.returncode != 0:  # e.g. the directory is already gone: forget it all the same
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)
