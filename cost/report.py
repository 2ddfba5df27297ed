"""Per environment and model: the configured serving profile and its alternatives, priced and rendered.

Alternatives, each at the deployment's min_instances (an always-on endpoint bills them all month):
eia (the model's EIA host + accelerator), gpu (the cheapest GPU instance the price table has for the
region), cpu (the model's CPU instance) and serverless (the model's memory size at the assumed rate).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from config.schema import AppConfig, ModelDeployment, ProfileSettings
from config.serving_targets import PROFILE_DEFAULTS, instance_family, is_gpu_family
from cost import estimate
from cost.prices import PriceTable, display_path

DEFAULT_ASSUMPTIONS = Path(__file__).parent / "assumptions.yaml"
PROFILES = ("eia", "gpu", "cpu", "serverless")
NA = "n/a"


@dataclass(frozen=True)
class Assumptions:
    requests_per_second: float
    payload_kb: float
    latency_ms: Mapping[str, float]  # per profile; serverless: the billed duration
    path: str

    def describe(self) -> str:
        latencies = ", ".join(f"{p} {self.latency_ms[p]:g}" for p in PROFILES)
        return (f"{self.path}: {self.requests_per_second:g} req/s, {self.payload_kb:g} KB per inference, "
                f"latency ms {latencies}")


def load_assumptions(path: Path | str = DEFAULT_ASSUMPTIONS, requests_per_second: Optional[float] = None,
                     payload_kb: Optional[float] = None, latency_ms: Optional[Mapping[str, float]] = None) -> Assumptions:
    """The assumptions file, with any flag values laid over it; ValueError says what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the assumptions: {error}") from None
    latencies = dict(raw.get("latency_ms") or {})
    latencies.update(latency_ms or {})
    values = {
        "requests_per_second": raw.get("requests_per_second") if requests_per_second is None else requests_per_second,
        "payload_kb": raw.get("payload_kb") if payload_kb is None else payload_kb,
        **{f"latency_ms.{p}": latencies.get(p) for p in PROFILES},
    }
    bad = [f"{key} = {value!r}" for key, value in values.items()
           if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
           or (value == 0 and key != "payload_kb")]
    if bad:
        raise ValueError(f"{path} (with flags): {', '.join(bad)}: each must be a positive number "
                         f"(latency_ms needs {', '.join(PROFILES)})")
    return Assumptions(float(values["requests_per_second"]), float(values["payload_kb"]),
                       {p: float(latencies[p]) for p in PROFILES}, display_path(path))


@dataclass(frozen=True)
class Option:
    profile: str
    label: str  # the chart's bar name: the profile, or "<profile> (configured)" when both appear
    configured: bool
    instance_type: Optional[str]
    accelerator_type: Optional[str]
    instance_count: Optional[int]  # None for serverless
    memory_size_mb: Optional[int]  # serverless only
    latency_ms: float
    hourly: Optional[float]  # serverless: the monthly cost spread over 730 h
    monthly: Optional[float]
    saving_vs_gpu: Optional[float]
    cost_per_million: Optional[float]
    notes: Tuple[str, ...] = ()

    def resources(self, requests_per_second: float) -> str:
        if self.profile == "serverless":
            return f"{self.memory_size_mb} MB, {requests_per_second:g} req/s x {self.latency_ms:g} ms"
        accelerator = f" + {self.accelerator_type}" if self.accelerator_type else ""
        return f"{self.instance_count} x {self.instance_type}{accelerator}"


@dataclass(frozen=True)
class ModelEstimate:
    environment: str
    region: str
    model: str
    configured_profile: str
    baseline: str  # what "vs GPU" compares against
    baseline_monthly: Optional[float]
    options: Tuple[Option, ...] = field(default_factory=tuple)


def estimate_all(config: AppConfig, assumptions: Assumptions, table: PriceTable) -> List[ModelEstimate]:
    return [estimate_model(env.name, env.region, deployment, assumptions, table)
            for env in config.environments for deployment in env.models]


def estimate_model(environment: str, region: str, deployment: ModelDeployment, assumptions: Assumptions,
                   table: PriceTable) -> ModelEstimate:
    count = deployment.scaling.min_instances
    baseline_monthly = estimate.monthly_cost(region, estimate.BASELINE_GPU_INSTANCE, None, count, table)
    target = deployment.target
    configured = _Spec(target.profile, target.instance_type, target.accelerator_type,
                       getattr(target, "memory_size_mb", None), getattr(target, "max_concurrency", None))
    alternatives = [spec for spec in (_alternative(p, deployment, region, table) for p in PROFILES) if spec != configured]
    shared_profile = any(spec.profile == configured.profile for spec in alternatives)
    options = [_priced(configured, True, shared_profile, region, count, baseline_monthly, assumptions, table)]
    options += [_priced(spec, False, False, region, count, baseline_monthly, assumptions, table) for spec in alternatives]
    return ModelEstimate(environment, region, deployment.name, target.profile,
                         f"{count} x {estimate.BASELINE_GPU_INSTANCE} always on", baseline_monthly, tuple(options))


@dataclass(frozen=True)
class _Spec:
    profile: str
    instance_type: Optional[str]
    accelerator_type: Optional[str]
    memory_size_mb: Optional[int]
    max_concurrency: Optional[int]


def _alternative(profile: str, deployment: ModelDeployment, region: str, table: PriceTable) -> _Spec:
    settings = _profile_settings(deployment, profile)
    instance_type = settings.instance_type
    if profile == "gpu":
        instance_type = cheapest_gpu_instance(region, table) or instance_type
    return _Spec(profile, instance_type, settings.accelerator_type if profile == "eia" else None,
                 settings.memory_size_mb if profile == "serverless" else None,
                 settings.max_concurrency if profile == "serverless" else None)


def _profile_settings(deployment: ModelDeployment, profile: str) -> ProfileSettings:
    """The model's settings for any profile (not only the active one): built-in defaults, then the model file."""
    merged = PROFILE_DEFAULTS[profile].model_dump()
    override = deployment.spec.serving.profiles.get(profile)
    if override is not None:
        merged.update({k: v for k, v in override.model_dump().items() if v is not None})
    return ProfileSettings(**merged)


def priced_types(config: AppConfig, table: PriceTable) -> Dict[str, set]:
    """Per region, every instance and accelerator type the report prices (all the table's GPUs: the cheapest wins)."""
    wanted: Dict[str, set] = {}
    for env in config.environments:
        names = wanted.setdefault(env.region, {estimate.BASELINE_GPU_INSTANCE})
        names.update(t for t in table.instance_types(env.region) if is_gpu_family(instance_family(t)))
        for deployment in env.models:
            target = deployment.target
            for spec in [_alternative(p, deployment, env.region, table) for p in PROFILES]:
                names.update(n for n in (spec.instance_type, spec.accelerator_type) if n)
            names.update(n for n in (target.instance_type, target.accelerator_type) if n)
    return wanted


def cheapest_gpu_instance(region: str, table: PriceTable) -> Optional[str]:
    prices = {t: table.instance_hourly(region, t) for t in table.instance_types(region) if is_gpu_family(instance_family(t))}
    return min(prices, key=lambda t: (prices[t], t)) if prices else None


def _priced(spec: _Spec, configured: bool, shared_profile: bool, region: str, count: int,
            baseline_monthly: Optional[float], assumptions: Assumptions, table: PriceTable) -> Option:
    latency = assumptions.latency_ms[spec.profile]
    rate = assumptions.requests_per_second
    notes = []
    if spec.profile == "serverless":
        monthly = estimate.monthly_serverless_cost(region, spec.memory_size_mb, rate, latency, assumptions.payload_kb, table)
        per_inference = estimate.serverless_cost_per_inference(region, spec.memory_size_mb, latency, assumptions.payload_kb, table)
        hourly = None if monthly is None else monthly / estimate.HOURS_PER_MONTH
        per_million = None if per_inference is None else per_inference * 1_000_000
        concurrency = rate * latency / 1000
        if spec.max_concurrency and concurrency > spec.max_concurrency:
            notes.append(f"throttled: needs ~{concurrency:.0f} concurrent > max_concurrency {spec.max_concurrency}")
        notes.append("cold starts not priced")
        if monthly is None:
            notes.insert(0, f"no serverless price for {region}")
        count_or_none = None
    else:
        hourly = estimate.hourly_cost(region, spec.instance_type, spec.accelerator_type, count, table)
        monthly = estimate.monthly_cost(region, spec.instance_type, spec.accelerator_type, count, table)
        per_million = estimate.cost_per_million(
            estimate.hourly_cost(region, spec.instance_type, spec.accelerator_type, 1, table), latency)
        needed = estimate.instances_needed(rate, latency)
        if needed > count:
            at_needed = estimate.monthly_cost(region, spec.instance_type, spec.accelerator_type, needed, table)
            notes.append(f"needs {needed} instances at {rate:g} req/s"
                         + ("" if at_needed is None else f" (${at_needed:,.0f}/month)"))
        if spec.profile == "eia":
            notes.append("EI end of life")
        if hourly is None:
            missing = [n for n, p in ((spec.instance_type, table.instance_hourly(region, spec.instance_type)),
                                      (spec.accelerator_type, table.accelerator_hourly(region, spec.accelerator_type)))
                       if n and p is None]
            notes.insert(0, f"no price for {' + '.join(missing) or spec.instance_type} in {region}")
        count_or_none = count
    if spec.profile == "gpu" and not configured:
        notes.append("cheapest GPU in the table")
    label = f"{spec.profile} (configured)" if configured and shared_profile else spec.profile
    return Option(spec.profile, label, configured, spec.instance_type, spec.accelerator_type, count_or_none,
                  spec.memory_size_mb, latency, hourly, monthly, estimate.saving(baseline_monthly, monthly),
                  per_million, tuple(notes))


# ---------------------------------------------------------------- rendering

COLUMNS = ("option", "resources", "$/hour", "$/month", "vs GPU", "$/1M inferences", "notes")


def _money(value: Optional[float], digits: int = 2) -> str:
    return NA if value is None else f"{value:,.{digits}f}"


def _saving(value: Optional[float]) -> str:
    if value is None:
        return NA
    if abs(value) < 0.0005:
        return "same"
    return f"{abs(value):.1%} {'less' if value > 0 else 'more'}"


def _row(option: Option, rate: float) -> Tuple[str, ...]:
    name = f"{option.profile} *" if option.configured else option.profile
    return (name, option.resources(rate), _money(option.hourly, 3), _money(option.monthly), _saving(option.saving_vs_gpu),
            _money(option.cost_per_million), "; ".join(option.notes))


def header_lines(table: PriceTable, assumptions: Assumptions) -> List[str]:
    live = [table.live_note] if table.live_note else []
    return [
        f"prices: {table.describe()}; {estimate.HOURS_PER_MONTH} h/month",
        *live,
        f"assumptions: {assumptions.describe()}",
        f"* = configured profile; vs GPU = monthly cost against {estimate.BASELINE_GPU_INSTANCE} always on, "
        "same instance count; $/1M inferences = one instance busy one request at a time (serverless: per request)",
    ]


def render_text(estimates: Sequence[ModelEstimate], table: PriceTable, assumptions: Assumptions) -> str:
    lines = header_lines(table, assumptions)
    rate = assumptions.requests_per_second
    for item in estimates:
        rows = [COLUMNS] + [_row(option, rate) for option in item.options]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        right = {2, 3, 5}  # numbers
        lines += ["", f"{item.environment} ({item.region}) / {item.model}: configured profile {item.configured_profile}"]
        for row in rows:
            cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
            lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"


def render_markdown(estimates: Sequence[ModelEstimate], table: PriceTable, assumptions: Assumptions) -> str:
    lines = [f"- {line}" for line in header_lines(table, assumptions)] + [""]
    lines.append("| environment | model | " + " | ".join(COLUMNS) + " |")
    lines.append("|---|---|" + "|".join("---:" if c.startswith("$") or c == "vs GPU" else "---" for c in COLUMNS) + "|")
    for item in estimates:
        for option in item.options:
            cells = (f"{item.environment} ({item.region})", item.model) + _row(option, assumptions.requests_per_second)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_json(estimates: Sequence[ModelEstimate], table: PriceTable, assumptions: Assumptions) -> str:
    document = {
        "prices": {"table": table.path, "as_of": table.as_of, "currency": table.currency, "source": table.source,
                   "live_note": table.live_note, "hours_per_month": estimate.HOURS_PER_MONTH},
        "assumptions": asdict(assumptions),
        "baseline_instance": estimate.BASELINE_GPU_INSTANCE,
        "estimates": [asdict(item) for item in estimates],
    }
    return json.dumps(document, indent=2) + "\n"

