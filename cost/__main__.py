"""python -m cost: the configured serving profile of every model in every environment, and its alternatives.

Prints a fixed-width table and writes cost.png, cost.json and cost.md to --out. Exit status: 0, or 1 with
one line naming the problem (a bad config, price table, assumption or flag).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from config import ConfigError, load_config
from cost import prices, report


def main(argv: Optional[Sequence[str]] = None, pricing_client=None) -> int:
    args = _parser().parse_args(argv)
    try:
        latencies = _latencies(args.latency_ms)
        assumptions = report.load_assumptions(args.assumptions, args.requests_per_second, args.payload_kb, latencies,
                                              _idle_fractions(args.idle_fraction))
        table = prices.read_table(args.prices) if args.prices else prices.default_table()
        config = load_config(args.config)
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.live:
        table = prices.with_live_prices(table, report.priced_types(config, table), client=pricing_client)
    estimates = report.estimate_all(config, assumptions, table)
    print(report.render_text(estimates, table, assumptions), end="")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost.json").write_text(report.render_json(estimates, table, assumptions))
    (out / "cost.md").write_text(report.render_markdown(estimates, table, assumptions))
    written = ["cost.json", "cost.md"]
    if not args.no_chart:
        from cost.chart import write_chart  # matplotlib only when a chart is drawn

        write_chart(estimates, table, assumptions, out / "cost.png")
        written.insert(0, "cost.png")
    print(f"\nwrote {', '.join(str(out / name) for name in written)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cost", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config", help="config directory (default: config)")
    parser.add_argument("--out", default="build/cost", help="where cost.png, cost.json, cost.md go (default: build/cost)")
    parser.add_argument("--prices", help=f"price table (default: {prices.DEFAULT_TABLE.relative_to(Path(__file__).parent.parent)})")
    parser.add_argument("--live", action="store_true",
                        help="fetch hourly prices from the AWS Pricing API (needs credentials; falls back to the table)")
    parser.add_argument("--assumptions", default=str(report.DEFAULT_ASSUMPTIONS), help="traffic and latency assumptions (YAML)")
    parser.add_argument("--requests-per-second", type=float, help="steady request rate (overrides the assumptions file)")
    parser.add_argument("--payload-kb", type=float, help="KB processed per inference, request + response")
    parser.add_argument("--latency-ms", nargs="+", action="extend", default=[], metavar="PROFILE=MS",
                        help=f"latency per inference, e.g. --latency-ms cpu=650 gpu=30 (profiles: {', '.join(report.PROFILES)})")
    parser.add_argument("--idle-fraction", nargs="+", action="extend", default=[], metavar="ENV=FRACTION",
                        help="share of the month an environment's endpoints have no traffic, e.g. --idle-fraction dev=0.9 "
                        "(prices scale to zero and async)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    return parser


def _latencies(items: List[str]) -> Dict[str, float]:
    latencies = {}
    for item in items:
        profile, _, value = item.partition("=")
        if profile not in report.PROFILES:
            raise ValueError(f"--latency-ms {item!r}: profile must be one of {', '.join(report.PROFILES)} (PROFILE=MS)")
        try:
            latencies[profile] = float(value)
        except ValueError:
            raise ValueError(f"--latency-ms {item!r}: {value!r} is not a number of milliseconds (PROFILE=MS)") from None
    return latencies


def _idle_fractions(items: List[str]) -> Dict[str, float]:
    fractions = {}
    for item in items:
        environment, _, value = item.partition("=")
        try:
            fractions[environment] = float(value)
        except ValueError:
            raise ValueError(f"--idle-fraction {item!r}: {value!r} is not a fraction (ENV=FRACTION, e.g. dev=0.75)") from None
        if not environment:
            raise ValueError(f"--idle-fraction {item!r}: name the environment (ENV=FRACTION, e.g. dev=0.75)")
    return fractions


if __name__ == "__main__":
    sys.exit(main())
