"""The PNG: monthly cost per serving option, grouped by environment, one panel per model (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from cost.prices import PriceTable  # noqa: E402
from cost.report import Assumptions, ModelEstimate  # noqa: E402

COLORS = {"eia": "#8c6d31", "gpu": "#3182bd", "cpu": "#31a354", "serverless": "#e6550d", "async": "#756bb1"}


def write_chart(estimates: Sequence[ModelEstimate], table: PriceTable, assumptions: Assumptions, path: Path) -> Path:
    models: Dict[str, List[ModelEstimate]] = {}
    for item in estimates:
        models.setdefault(item.model, []).append(item)
    figure, axes = plt.subplots(len(models), 1, figsize=(10, 4.8 * len(models)), squeeze=False)
    for axis, (model, items) in zip(axes[:, 0], models.items()):
        _panel(axis, model, items)
    figure.suptitle(f"Monthly cost per serving option (USD; prices as of {table.as_of}, "
                    f"{assumptions.requests_per_second:g} req/s)", fontsize=12)
    figure.text(0.01, 0.005, "hatched = configured profile; n/a = no price in the table; instance options always on "
                "at min_instances; pale 'to zero' = no instance while idle (cost/assumptions.yaml idle_fraction)",
                fontsize=8, color="#555555")
    figure.tight_layout(rect=(0, 0.03, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _panel(axis, model: str, items: Sequence[ModelEstimate]) -> None:
    labels: List[str] = []
    for item in items:
        labels += [o.label for o in item.options if o.label not in labels]
    width = 0.8 / len(labels)
    legend: set = set()
    top = max((o.monthly for item in items for o in item.options if o.monthly is not None), default=1.0)
    for index, label in enumerate(labels):
        for group, item in enumerate(items):
            option = next((o for o in item.options if o.label == label), None)
            if option is None:
                continue
            x = group - 0.4 + width * (index + 0.5)
            height = option.monthly or 0.0
            axis.bar(x, height, width * 0.92, color=COLORS.get(option.profile, "#999999"),
                     alpha=0.55 if option.scales_to_zero else 1.0,  # pale: billed only for the active share
                     hatch="//" if option.configured else None, edgecolor="black" if option.configured else "none",
                     label=None if label in legend else label)
            legend.add(label)
            text = "n/a" if option.monthly is None else f"${option.monthly:,.0f}"
            axis.text(x, height + top * 0.01, text, ha="center", va="bottom", fontsize=7)
    axis.set_xticks(range(len(items)))
    axis.set_xticklabels([f"{item.environment}\n{item.region}" for item in items])
    axis.set_ylabel("USD per month")
    axis.set_ylim(0, top * 1.4)  # room for the legend above the tallest bar
    axis.set_title(model)
    axis.legend(fontsize=8, ncols=min(len(labels), 5), loc="upper left")
    axis.grid(axis="y", alpha=0.3)
