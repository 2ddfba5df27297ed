"""SageMaker hosting prices: the dated table in cost/data/, and optional live prices from the AWS Pricing API.

Importing this module reads nothing and imports no AWS library: the table is read on first use (cached),
and boto3 is imported only by `with_live_prices`, the one function that may call AWS.
"""
from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

DEFAULT_TABLE = Path(__file__).parent / "data" / "sagemaker-hosting-prices.json"
# The Pricing API answers in us-east-1 (and two other regions) for every region's prices.
PRICING_API_REGION = "us-east-1"


@dataclass(frozen=True)
class ServerlessRates:
    per_gb_second: float  # compute: memory (GB) x billed duration (s)
    per_gb_processed: float  # data in + data out


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    source: str
    currency: str
    regions: Mapping[str, Mapping[str, Any]]
    path: str
    # Set when some prices came from the AWS Pricing API (see with_live_prices).
    live_note: Optional[str] = None

    def instance_hourly(self, region: str, instance_type: Optional[str]) -> Optional[float]:
        return self._price(region, "instances", instance_type)

    def accelerator_hourly(self, region: str, accelerator_type: Optional[str]) -> Optional[float]:
        return self._price(region, "accelerators", accelerator_type)

    def serverless(self, region: str) -> Optional[ServerlessRates]:
        rates = self.regions.get(region, {}).get("serverless")
        if not rates:
            return None
        return ServerlessRates(float(rates["per_gb_second"]), float(rates["per_gb_processed"]))

    def instance_types(self, region: str) -> Tuple[str, ...]:
        return tuple(self.regions.get(region, {}).get("instances", {}))

    def describe(self) -> str:
        return f"{self.path}, as of {self.as_of}, {self.currency}, on-demand"

    def _price(self, region: str, section: str, name: Optional[str]) -> Optional[float]:
        if not name:
            return None
        value = self.regions.get(region, {}).get(section, {}).get(name)
        return None if value is None else float(value)


def read_table(path: Path | str) -> PriceTable:
    """Read and check a price table; ValueError names the file and what is wrong."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the price table: {error}") from None
    problems = _shape_problems(raw)
    if problems:
        raise ValueError(f"{path}: not a price table: {'; '.join(problems)}")
    return PriceTable(as_of=raw["as_of"], source=raw["source"], currency=raw["currency"], regions=raw["regions"],
                      path=display_path(path))


@lru_cache(maxsize=None)
def default_table() -> PriceTable:
    return read_table(DEFAULT_TABLE)


def _shape_problems(raw: Any) -> List[str]:
    if not isinstance(raw, dict):
        return ["the top level must be an object"]
    problems = []
    try:
        datetime.date.fromisoformat(str(raw.get("as_of")))
    except ValueError:
        problems.append(f"as_of = {raw.get('as_of')!r} is not a YYYY-MM-DD date")
    for key in ("source", "currency"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            problems.append(f"{key} must be a non-empty string")
    regions = raw.get("regions")
    if not isinstance(regions, dict) or not regions:
        return problems + ["regions must map region names to prices"]
    for region, prices in regions.items():
        for section in ("instances", "accelerators", "serverless"):
            values = prices.get(section, {}) if isinstance(prices, dict) else None
            if not isinstance(values, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values.values()
            ):
                problems.append(f"regions.{region}.{section} must map names to positive numbers")
    return problems


def display_path(path: Path) -> str:
    """The path relative to the working directory when it lies below it (as printed in reports)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- live prices (AWS Pricing API)


def with_live_prices(
    table: PriceTable,
    wanted: Mapping[str, Iterable[str]],
    client: Any = None,
    today: Optional[datetime.date] = None,
) -> PriceTable:
    """`table` with the hourly prices of `wanted` ({region: instance and accelerator types}) fetched live.

    Prices the API does not return stay as in the table. Without credentials (or without network, or
    without pricing:GetProducts) the table comes back unchanged, with a one-line note saying so.
    Serverless rates always come from the table (the Pricing API has no per-memory-size product).
    """
    try:
        if client is None:
            import boto3

            client = boto3.client("pricing", region_name=PRICING_API_REGION)
        found, missing = {}, []
        for region, names in wanted.items():
            for name in sorted(set(names)):
                price = fetch_hourly_price(client, region, name)
                if price is None:
                    missing.append(f"{name} in {region}")
                else:
                    found[(region, name)] = price
    except Exception as error:  # noqa: BLE001 - botocore's errors, without importing botocore here
        if not _is_aws_error(error):
            raise
        first_line = (str(error).splitlines() or [""])[0]
        return replace(table, live_note=(
            f"live prices unavailable ({type(error).__name__}: {first_line}); using the table as of {table.as_of}"))
    regions = copy.deepcopy(dict(table.regions))
    for (region, name), price in found.items():
        section = "accelerators" if ".eia" in name else "instances"
        regions.setdefault(region, {}).setdefault(section, {})[name] = price
    day = (today or datetime.date.today()).isoformat()
    note = f"{len(found)} hourly prices live from the AWS Pricing API on {day}"
    if missing:
        note += f"; not returned, so from the table: {', '.join(missing)}"
    return replace(table, regions=regions, live_note=note)


def fetch_hourly_price(client: Any, region: str, name: str) -> Optional[float]:
    """The on-demand hourly USD price of one hosting instance or accelerator type, or None."""
    filters = [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "instanceName", "Value": name},
        {"Type": "TERM_MATCH", "Field": "component", "Value": "Hosting"},
    ]
    price_list: List[Any] = []
    kwargs: Dict[str, Any] = {"ServiceCode": "AmazonSageMaker", "Filters": filters, "MaxResults": 100}
    while True:
        page = client.get_products(**kwargs)
        price_list += page.get("PriceList", [])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return hourly_price_from_products(price_list, name)


def hourly_price_from_products(price_list: Iterable[Any], name: str) -> Optional[float]:
    """Pick the on-demand hourly price of `name` from Pricing API products (JSON strings or dicts).

    Prefers the product whose usage type is `<region prefix>-Host:<name>`; with no such product, uses the
    only product returned; with several and none of them exact, gives up (None) rather than guess.
    """
    candidates = []
    for raw in price_list:
        product = json.loads(raw) if isinstance(raw, str) else raw
        usage_type = product.get("product", {}).get("attributes", {}).get("usagetype", "")
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD") or 0)
                if dimension.get("unit", "").lower() in ("hrs", "hours") and usd > 0:
                    candidates.append((usage_type, usd))
    exact = [usd for usage_type, usd in candidates if usage_type.endswith(f"Host:{name}")]
    if exact:
        return exact[0]
    return candidates[0][1] if len(candidates) == 1 else None


def _is_aws_error(error: Exception) -> bool:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no botocore at all: live prices cannot work, which is the fallback's case
        return isinstance(error, ImportError)
    return isinstance(error, (BotoCoreError, ClientError, ImportError))
