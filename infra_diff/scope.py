"""What a diff must build and synthesize: only the models whose files changed, when nothing else did.

The rule: when every path that differs between the base commit and the working tree (committed, staged, unstaged
and untracked-but-not-ignored; `git.changed_files`) is a model file `<config>/models/<name>.yaml`, both sides build
only those models and synthesize with `-c only_models=<names>` (the app then holds only them; a name one side lacks
is ignored, so an added or removed model works). Anything else that differs (code, environments, app.yaml,
pipeline.yaml, weights, this tool), or nothing at all, means the full build and synthesis of both sides.
"""
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

# A model's name is its file's stem; one that could not travel in `-c only_models=a,b` falls back to the full diff.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAMES_SHOWN = 10


@dataclass(frozen=True)
class Scope:
    models: Optional[Tuple[str, ...]]  # None: everything; else the changed models, sorted
    other_models: int = 0  # the working tree's models whose files are unchanged (not synthesized)
    reason: str = ""  # why everything is synthesized

    @property
    def full(self) -> bool:
        return self.models is None

    def describe(self) -> str:
        """One plain line for the report's header."""
        if self.full:
            return f"scope: everything ({self.reason}): every model built and every stack synthesized on both sides"
        return f"scope: model files only ({names(self.models)}); {self._others()}"

    def summary_note(self) -> str:
        """The end of the summary line of a scoped diff ('' for a full one)."""
        if self.full:
            return ""
        return f"Scope: model files only ({names(self.models)}); {self._others()}."

    def _others(self) -> str:
        if not self.other_models:
            return "no other model is configured"
        plural = "s'" if self.other_models != 1 else "'s"
        return f"the other {self.other_models} model{plural} files are unchanged, so neither side builds or synthesizes them"


def model_file_prefix(config: str) -> Optional[str]:
    """'config/models/' for --config config (relative to the checkout root); None when it leaves the repository."""
    normalized = posixpath.normpath(config.replace("\\", "/"))
    if normalized.startswith(("/", "../")) or normalized == "..":
        return None
    return "models/" if normalized == "." else f"{normalized}/models/"


def model_name(path: str, prefix: Optional[str]) -> Optional[str]:
    """The model a changed path is the file of (`<config>/models/<name>.yaml`), or None for any other file."""
    if prefix is None or not path.startswith(prefix) or not path.endswith(".yaml"):
        return None
    name = path[len(prefix):-len(".yaml")]
    return name if "/" not in name and _MODEL_NAME.fullmatch(name) else None


def scope_of(changed: List[str], config: str, configured_models: Iterable[str]) -> Scope:
    """`changed`: repository-relative paths that differ; `configured_models`: the working tree's model names."""
    if not changed:
        return Scope(None, reason="no file differs from the base; synthesized to confirm it")
    prefix = model_file_prefix(config)
    others = [path for path in changed if model_name(path, prefix) is None]
    if others:
        more = f" and {len(others) - 1} other file{'s' if len(others) > 2 else ''}" if len(others) > 1 else ""
        return Scope(None, reason=f"{others[0]}{more} differ{'s' if not more else ''} from the base, not only model files")
    models = tuple(sorted({model_name(path, prefix) for path in changed}))
    return Scope(models, other_models=len(set(configured_models) - set(models)))


def names(items: Iterable[str], shown: int = NAMES_SHOWN) -> str:
    """'a, b, c', or the first `shown` and 'and N more'."""
    items = list(items)
    if len(items) <= shown:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"
