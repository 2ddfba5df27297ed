"""The report: a header, one section per stack that differs, a summary line; plain text or Markdown."""
import difflib
import json
from dataclasses import dataclass
from typing import List, Sequence

from infra_diff.assembly import ADDED, CHANGED, REMOVED, UNCHANGED, StackComparison
from infra_diff.changes import StackChanges, all_changes
from infra_diff.hazards import cross_stack_move_hazards, endpoint_update_hazards, replacement_hazards
from infra_diff.scope import NAMES_SHOWN, names

NO_CDK_DIFFERENCES = "There were no differences"
STATUS_TEXT = {ADDED: "stack added (not in the base)", REMOVED: "stack removed (not in the working tree)"}
# A diff scoped to some models synthesizes only them: a stack on one side only may still hold other models.
SCOPED_STATUS_TEXT = {
    ADDED: "the changed models arrive (this stack is not in the base's synthesis of them; it is new unless other models live here)",
    REMOVED: "the changed models leave (this stack is not in the working tree's synthesis of them; it is deleted unless other "
             "models live here)",
}
# cdk diff's change markers -> the first column of a ```diff block, so GitHub colours the lines.
MARKERS = (("[+]", "+"), ("[-]", "-"), ("[~]", "!"), ("│ + │", "+"), ("│ - │", "-"))


@dataclass(frozen=True)
class Section:
    title: str
    body: str


def cdk_diff_body(output: str, stack: str) -> str:
    """The lines `cdk diff` prints about `stack`: after 'Stack <name> (...)', before its closing count.
    What comes first (the synthesis warnings stored in the assembly, repeated) is left out."""
    lines = output.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line == f"Stack {stack}" or line.startswith(f"Stack {stack} (")), None)
    if start is None:
        return output.strip("\n")
    end = next((i for i in range(start, len(lines)) if "Number of stacks with differences" in lines[i]), len(lines))
    return "\n".join(lines[start:end]).strip("\n")


def json_diff(base: dict, head: dict) -> str:
    """Unified diff of two templates, for differences cdk diff does not render."""
    def dump(template):
        return json.dumps(template, indent=1, sort_keys=True).splitlines()

    return "\n".join(difflib.unified_diff(dump(base), dump(head), "base", "working tree", lineterm=""))


def section(comparison: StackComparison, cdk_output: str = "", moved_here: Sequence[str] = (), scoped: bool = False) -> Section:
    """`moved_here`: this stack's lines of `cross_stack_move_hazards` (they need every stack's comparison);
    `scoped`: only the changed models were synthesized (Scope.models)."""
    if comparison.status == REMOVED:
        intro = ("The working tree no longer places the changed models in this stack; their resources here:" if scoped
                 else "Deploying the working tree would no longer include this stack; it holds:")
        body = "\n".join([intro,
                          *(f"[-] {t} {logical_id}" for logical_id, t in _resources(comparison.base.template))])
    else:
        body = cdk_diff_body(cdk_output, comparison.name) if cdk_output else ""
        if body.strip().startswith(NO_CDK_DIFFERENCES):  # "... (CDK metadata changes were hidden, ...)"
            body = json_diff(comparison.base.template, comparison.head.template)
    if comparison.asset_changes:
        body = "\n".join(filter(None, [body, "Assets", *comparison.asset_changes]))
    body = "\n".join([*hazards(comparison), *moved_here, body])
    status_text = (SCOPED_STATUS_TEXT if scoped else STATUS_TEXT).get(comparison.status, comparison.status)
    return Section(f"{comparison.name}: {status_text}", body)


def hazards(comparison: StackComparison) -> List[str]:
    """The WARNING lines of a stack: deploys that would fail, or replace what has a fixed name or holds data."""
    return [*endpoint_update_hazards(comparison), *replacement_hazards(comparison)]


def _resources(template: dict):
    return sorted((logical_id, r.get("Type", "?")) for logical_id, r in template.get("Resources", {}).items())


def summary(comparisons: List[StackComparison], scope_note: str = "") -> str:
    """One line. Up to NAMES_SHOWN differing stacks are named inline; beyond that the first ones, 'and N more',
    and the count of each kind. `scope_note` (a diff scoped to some models) ends the line."""
    differing = [c for c in comparisons if c.status != UNCHANGED]
    unchanged = len(comparisons) - len(differing)
    note = f" {scope_note}" if scope_note else ""
    if not differing:
        return f"No differences: all {unchanged} stacks unchanged.{note}"
    moves = cross_stack_move_hazards(comparisons)
    warnings = sum(len(hazards(c)) + len(moves.get(c.name, [])) for c in differing)
    # Sections fold away in a PR comment: the count stands in the summary line.
    flagged = f" {warnings} WARNING{'S' if warnings > 1 else ''} in the sections above." if warnings else ""
    listed = names([c.name for c in differing])
    if len(differing) > NAMES_SHOWN:
        kinds = ", ".join(f"{n} {status}" for status in (ADDED, REMOVED, CHANGED)
                          for n in [sum(c.status == status for c in differing)] if n)
        listed = f"{kinds}: {listed}"
    return f"{_count(len(differing))} with differences ({listed}); {_count(unchanged)} unchanged.{flagged}{note}"


def overview(comparisons: List[StackComparison]) -> str:
    """For a PR comment with more than NAMES_SHOWN differing stacks: a Markdown table of them (stack, change,
    warnings), above the folded sections; '' otherwise."""
    differing = [c for c in comparisons if c.status != UNCHANGED]
    if len(differing) <= NAMES_SHOWN:
        return ""
    moves = cross_stack_move_hazards(comparisons)
    rows = ["| stack | change | warnings |", "|---|---|---|"]
    for c in differing:
        warnings = len(hazards(c)) + len(moves.get(c.name, []))
        rows.append(f"| `{c.name}` | {c.status} | {warnings or ''} |")
    return "\n".join(rows)


CALLOUTS_SHOWN = 5  # per stack and kind
CALLOUT_LINES = 20  # in all: with the rows, the block stays one screen


def change_summary(comparisons: List[StackComparison], markdown: bool = False) -> str:
    """The block on top: per differing stack (the first NAMES_SHOWN; the rest totalled) the resources added, changed
    in place, replaced and removed, then the replacements and IAM changes by name; '' when nothing differs."""
    changes = list(all_changes(comparisons).values())
    if not changes:
        return ""
    shown, rest = changes[:NAMES_SHOWN], changes[NAMES_SHOWN:]
    callouts, left_out = _callouts_within(shown, CALLOUT_LINES)
    if markdown:
        rows = ["| stack | added | changed | replaced | removed | replacements and IAM changes |", "|---|---:|---:|---:|---:|---|"]
        rows += [f"| `{c.stack}` | {c.added} | {c.changed} | {len(c.replaced)} | {c.removed} | "
                 f"{'<br>'.join(_md(line) for line in callouts[c.stack])} |" for c in shown]
        if rest:
            rows.append(f"| {len(rest)} more stacks | {_totals(rest)} | |")
        return "\n".join(rows + ([f"\n{left_out}"] if left_out else []))
    width = max(len("stack"), *(len(c.stack) for c in shown))
    lines = ["Changes per stack (resources; replaced: deleted and created again):",
             f"  {'stack':<{width}}  added  changed  replaced  removed"]
    for c in shown:
        lines.append(f"  {c.stack:<{width}}  {c.added:>5}  {c.changed:>7}  {len(c.replaced):>8}  {c.removed:>7}")
        lines += [f"  {'':<{width}}  {line}" for line in callouts[c.stack]]
    if rest:
        lines.append(f"  and {len(rest)} more stacks: {_totals(rest).replace(' | ', ' ')} (added changed replaced removed)")
    return "\n".join(lines + ([f"  {left_out}"] if left_out else []))


def _callouts(changes: StackChanges) -> List[str]:
    def capped(label, items):
        more = [f"{label} ... and {len(items) - CALLOUTS_SHOWN} more"] if len(items) > CALLOUTS_SHOWN else []
        return [f"{label} {item}" for item in items[:CALLOUTS_SHOWN]] + more

    return capped("replaced:", changes.replaced) + capped("IAM:", changes.iam)


def _callouts_within(shown: List[StackChanges], budget: int):
    """Each stack's callout lines while `budget` lasts, and a line saying how many were left out ('' when none)."""
    kept, left_out = {}, 0
    for c in shown:
        lines = _callouts(c)
        kept[c.stack] = lines[:budget]
        left_out += len(lines) - len(kept[c.stack])
        budget -= len(kept[c.stack])
    return kept, (f"{left_out} more replacement and IAM lines: see the sections below" if left_out else "")


def _totals(changes: List[StackChanges]) -> str:
    return " | ".join(str(sum(n)) for n in zip(*((c.added, c.changed, len(c.replaced), c.removed) for c in changes)))


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _count(n: int) -> str:
    return f"{n} stack" if n == 1 else f"{n} stacks"


def render(header: str, sections: List[Section], summary_line: str, markdown: bool, scope: str = "", table: str = "",
           changes: str = "") -> str:
    """`scope`: a line under the header saying what was synthesized; `table`: `overview()`, Markdown only;
    `changes`: `change_summary()`, on top of the sections."""
    if not markdown:
        parts = [header, *([scope] if scope else []), "", *([changes, ""] if changes else [])]
        for s in sections:
            parts += [f"=== {s.title} ===", s.body, ""]
        return "\n".join(parts + [summary_line]) + "\n"
    parts = [f"#### {header}", "", *([scope, ""] if scope else []), *([changes, ""] if changes else []), *([table, ""] if table else [])]
    for s in sections:
        parts += [f"<details><summary><b>{s.title}</b></summary>", "", "```diff", _diff_fenced(s.body), "```", "", "</details>", ""]
    return "\n".join(parts + [f"**{summary_line}**"]) + "\n"


def _diff_fenced(body: str) -> str:
    return "\n".join(_marked(line) for line in body.splitlines())


def _marked(line: str) -> str:
    if line[:1] in ("+", "-", "@"):  # already a unified diff line (the JSON fallback)
        return line
    found = [(line.find(marker), sign) for marker, sign in MARKERS if marker in line]
    return (min(found)[1] if found else " ") + line
