"""Cost arithmetic: pure functions over the price table, cheap to import (no config, no AWS, no plotting).

The CDK app may call `monthly_cost` / `monthly_serverless_cost` at synth time; both return None when the
table has no price for the region or type, so a caller can say "unknown" instead of failing.
"""
from __future__ import annotations

import math
from typing import Optional

from cost.prices import PriceTable, default_table

HOURS_PER_MONTH = 730  # AWS's own convention for a month of an always-on resource
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
MB_PER_GB = 1024  # serverless memory sizes: 1024 MB is billed as 1 GB
BYTES_PER_KB = 1024
BYTES_PER_GB = 1024 ** 3
# The seed's comparison ("up to 75 % cheaper than a GPU instance"): an always-on ml.g4dn.xlarge.
BASELINE_GPU_INSTANCE = "ml.g4dn.xlarge"


def hourly_cost(region: str, instance_type: Optional[str], accelerator_type: Optional[str] = None,
                instance_count: int = 1, table: Optional[PriceTable] = None) -> Optional[float]:
    """(host + accelerator) x instance_count per hour, or None when a price is missing."""
    table = table or default_table()
    host = table.instance_hourly(region, instance_type)
    if host is None:
        return None
    accelerator = 0.0
    if accelerator_type:
        accelerator = table.accelerator_hourly(region, accelerator_type)
        if accelerator is None:
            return None
    return (host + accelerator) * instance_count


def monthly_cost(region: str, instance_type: Optional[str], accelerator_type: Optional[str] = None,
                 instance_count: int = 1, table: Optional[PriceTable] = None) -> Optional[float]:
    """An always-on instance endpoint for a month (730 h); None when the table has no price for it."""
    hourly = hourly_cost(region, instance_type, accelerator_type, instance_count, table)
    return None if hourly is None else hourly * HOURS_PER_MONTH


def monthly_cost_when_active(region: str, instance_type: Optional[str], accelerator_type: Optional[str] = None,
                             instance_count: int = 1, idle_fraction: float = 0.0,
                             table: Optional[PriceTable] = None) -> Optional[float]:
    """An endpoint that scales to zero instances while idle (scale to zero, async): billed only for the share of
    the month with traffic, at `instance_count` instances then; None when the table has no price for it."""
    monthly = monthly_cost(region, instance_type, accelerator_type, instance_count, table)
    return None if monthly is None else monthly * (1 - idle_fraction)


def async_requests_monthly(requests_per_second: float, usd_per_inference: float) -> float:
    """The async profile's S3 and SNS requests for a month at a steady rate (they follow the traffic, not the
    instances: the same whether the endpoint is idle part of the month or not)."""
    return requests_per_second * SECONDS_PER_MONTH * usd_per_inference


def serverless_cost_per_inference(region: str, memory_size_mb: int, duration_ms: float, payload_kb: float,
                                  table: Optional[PriceTable] = None) -> Optional[float]:
    """Memory (GB) x billed duration (s) x price per GB-second, plus the payload at the data price."""
    rates = (table or default_table()).serverless(region)
    if rates is None or not memory_size_mb:
        return None
    compute = memory_size_mb / MB_PER_GB * duration_ms / 1000 * rates.per_gb_second
    data = payload_kb * BYTES_PER_KB / BYTES_PER_GB * rates.per_gb_processed
    return compute + data


def monthly_serverless_cost(region: str, memory_size_mb: int, requests_per_second: float, duration_ms: float,
                            payload_kb: float, table: Optional[PriceTable] = None) -> Optional[float]:
    """A serverless endpoint at a steady request rate for a month; None when the region has no rates."""
    per_inference = serverless_cost_per_inference(region, memory_size_mb, duration_ms, payload_kb, table)
    return None if per_inference is None else per_inference * requests_per_second * SECONDS_PER_MONTH


def inferences_per_hour(latency_ms: float) -> float:
    """What one instance serves in an hour, one request at a time."""
    return 3_600_000 / latency_ms


def cost_per_million(hourly_price_per_instance: Optional[float], latency_ms: float) -> Optional[float]:
    """Cost of a million inferences on a fully busy instance (one request at a time)."""
    if hourly_price_per_instance is None:
        return None
    return hourly_price_per_instance / inferences_per_hour(latency_ms) * 1_000_000


def instances_needed(requests_per_second: float, latency_ms: float) -> int:
    """Instances serving one request at a time that keep up with a steady request rate (at least 1)."""
    return max(1, math.ceil(requests_per_second * latency_ms / 1000 - 1e-9))


def saving(baseline: Optional[float], cost: Optional[float]) -> Optional[float]:
    """The fraction of `baseline` that `cost` saves: 0.75 = 75 % cheaper, -0.2 = 20 % dearer."""
    if baseline is None or cost is None or baseline <= 0:
        return None
    return (baseline - cost) / baseline
