"""`python -m infra_diff`: offline `cdk diff` of every stack between a git ref and the working tree.

Both sides are built and synthesized from their own sources (the base from a temporary `git worktree`)
with this checkout's venv and CDK CLI, then compared stack by stack with `cdk diff --template`, which
reads two local templates and calls no AWS API. When only model files (`<config>/models/<name>.yaml`) differ, both
sides build and synthesize just those models (`infra_diff.scope`). Assemblies and `cdk diff` outputs are cached
between runs under keys that cover every input of the synthesis (`infra_diff.cache`); a summary of the changes per
stack leads the report (`infra_diff.changes`). Exit status: 0 nothing differs, 1 something differs, 2 usage, git or
synthesis error.
"""
NO_DIFFERENCES, DIFFERENCES, ERROR = 0, 1, 2


class UsageError(Exception):
    """Something the caller must fix (bad ref, missing setup, failed synthesis): exit 2, no traceback."""
