"""Per environment and model: the configured serving profile and its alternatives, priced and rendered.

Alternatives, each at the deployment's min_instances (at least 1; an always-on endpoint bills them all month):
eia (the model's EIA host + accelerator), gpu (the cheapest GPU instance the price table has for the
region), cpu (the model's CPU instance) and serverless (the model's memory size at the assumed rate).
Then the ones that scale to zero instances while idle, billed only for the environment's active share of the month
(1 - idle_fraction): "cpu to zero" and "gpu to zero" (scaling.min_instances: 0, an inference component) and
"async to zero" (serving.profile: async, scaled on its queue's backlog).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from config.schema import AppConfig, ModelDeployment, ProfileSettings
from config.serving_targets import PROFILE_DEFAULTS, instance_family, is_gpu_family
from cost import estimate
from cost.prices import PriceTable, display_path

DEFAULT_ASSUMPTIONS = Path(__file__).parent / "assumptions.yaml"
PROFILES = ("eia", "gpu", "cpu", "serverless", "async")
ALWAYS_ON_ALTERNATIVES = ("eia", "gpu", "cpu", "serverless")
TO_ZERO_ALTERNATIVES = ("cpu", "gpu", "async")  # priced with the environment's idle fraction
NA = "n/a"


@dataclass(frozen=True)
class Assumptions:
    requests_per_second: float
    payload_kb: float
    latency_ms: Mapping[str, float]  # per profile; serverless: the billed duration
    path: str
    # Per environment, the share of the month with no traffic (not listed: 0, never idle).
    idle_fraction: Mapping[str, float] = field(default_factory=dict)
    # The async profile's S3 and SNS requests, USD per inference (async_requests in the file).
    async_request_usd: float = 0.0

    def idle(self, environment: str) -> float:
        return self.idle_fraction.get(environment, 0.0)

    def describe(self) -> str:
        latencies = ", ".join(f"{p} {self.latency_ms[p]:g}" for p in PROFILES)
        idle = ", ".join(f"{env} {fraction:.0%}" for env, fraction in self.idle_fraction.items()) or "none"
        return (f"{self.path}: {self.requests_per_second:g} req/s, {self.payload_kb:g} KB per inference, "
                f"latency ms {latencies}; idle share of the month {idle}")


def load_assumptions(path: Path | str = DEFAULT_ASSUMPTIONS, requests_per_second: Optional[float] = None,
                     payload_kb: Optional[float] = None, latency_ms: Optional[Mapping[str, float]] = None,
                     idle_fraction: Optional[Mapping[str, float]] = None) -> Assumptions:
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
                       {p: float(latencies[p]) for p in PROFILES}, display_path(path),
                       _idle_fractions(path, raw.get("idle_fraction"), idle_fraction),
                       _async_request_usd(path, raw.get("async_requests") or {}))


ASYNC_REQUEST_KEYS = ("s3_puts", "s3_gets", "sns_publishes", "usd_per_1000_s3_puts", "usd_per_1000_s3_gets",
                      "usd_per_million_sns_publishes")


def _async_request_usd(path: Path, raw) -> float:
    """async_requests: what one async inference adds in S3 and SNS requests, USD."""
    values = {key: raw.get(key) for key in ASYNC_REQUEST_KEYS} if isinstance(raw, dict) else {}
    bad = [f"async_requests.{key} = {value!r}" for key, value in values.items()
           if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0]
    if bad or not values:
        raise ValueError(f"{path}: {', '.join(bad) or 'async_requests missing'}: needs {', '.join(ASYNC_REQUEST_KEYS)}, "
                         "each a number >= 0")
    return (values["s3_puts"] * values["usd_per_1000_s3_puts"] / 1000 + values["s3_gets"] * values["usd_per_1000_s3_gets"] / 1000
            + values["sns_publishes"] * values["usd_per_million_sns_publishes"] / 1_000_000)


def _idle_fractions(path: Path, from_file, from_flags: Optional[Mapping[str, float]]) -> Dict[str, float]:
    """idle_fraction: {environment: share of the month without traffic}, flags over the file; each in [0, 1)."""
    if from_file is not None and not isinstance(from_file, dict):
        raise ValueError(f"{path}: idle_fraction must map environment names to fractions, e.g. {{dev: 0.75}}")
    fractions = {**(from_file or {}), **(from_flags or {})}
    bad = [f"idle_fraction.{env} = {value!r}" for env, value in fractions.items()
           if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1]
    if bad:
        raise ValueError(f"{path} (with flags): {', '.join(bad)}: each must be a fraction from 0 (always busy) "
                         "to below 1 (1 would be an endpoint nobody calls)")
    return {env: float(value) for env, value in fractions.items()}


def option_name(profile: str, scales_to_zero: bool) -> str:
    """A row's name: the profile, "<profile> to zero" for an endpoint that scales to zero instances."""
    return f"{profile} to zero" if scales_to_zero else profile


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
    scales_to_zero: bool = False  # billed only while there is traffic: (1 - idle_fraction) of the month
    idle_fraction: float = 0.0
    saving_vs_configured: Optional[float] = None

    @property
    def name(self) -> str:
        return option_name(self.profile, self.scales_to_zero)

    def resources(self, requests_per_second: float) -> str:
        if self.profile == "serverless":
            return f"{self.memory_size_mb} MB, {requests_per_second:g} req/s x {self.latency_ms:g} ms"
        accelerator = f" + {self.accelerator_type}" if self.accelerator_type else ""
        active = f", {1 - self.idle_fraction:.0%} of the month" if self.scales_to_zero else ""
        return f"{self.instance_count} x {self.instance_type}{accelerator}{active}"


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
    # Instances while serving: min_instances, and 1 for an endpoint at min_instances 0 (each active hour
    # needs one instance: an inference component's copy, or an async variant's instance, runs on one).
    count = max(1, deployment.scaling.min_instances)
    baseline_monthly = estimate.monthly_cost(region, estimate.BASELINE_GPU_INSTANCE, None, count, table)
    target = deployment.target
    configured = _Spec(target.profile, target.instance_type, target.accelerator_type,
                       getattr(target, "memory_size_mb", None), getattr(target, "max_concurrency", None),
                       scales_to_zero=deployment.scales_to_zero and target.profile in TO_ZERO_ALTERNATIVES)
    candidates = [_alternative(p, deployment, region, table) for p in ALWAYS_ON_ALTERNATIVES]
    candidates += [replace(_alternative(p, deployment, region, table), scales_to_zero=True) for p in TO_ZERO_ALTERNATIVES]
    alternatives = [spec for spec in candidates if spec != configured]
    shared_name = any(spec.name == configured.name for spec in alternatives)
    idle = assumptions.idle(environment)
    first = _priced(configured, True, shared_name, region, count, baseline_monthly, assumptions, table, idle)
    options = [first] + [_priced(spec, False, False, region, count, baseline_monthly, assumptions, table, idle)
                         for spec in alternatives]
    options = [replace(option, saving_vs_configured=estimate.saving(first.monthly, option.monthly)) for option in options]
    return ModelEstimate(environment, region, deployment.name, configured.name,
                         f"{count} x {estimate.BASELINE_GPU_INSTANCE} always on", baseline_monthly, tuple(options))


@dataclass(frozen=True)
class _Spec:
    profile: str
    instance_type: Optional[str]
    accelerator_type: Optional[str]
    memory_size_mb: Optional[int]
    max_concurrency: Optional[int]
    scales_to_zero: bool = False

    @property
    def name(self) -> str:
        return option_name(self.profile, self.scales_to_zero)


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
            for spec in [_alternative(p, deployment, env.region, table) for p in PROFILES]:  # async included
                names.update(n for n in (spec.instance_type, spec.accelerator_type) if n)
            names.update(n for n in (target.instance_type, target.accelerator_type) if n)
    return wanted


def cheapest_gpu_instance(region: str, table: PriceTable) -> Optional[str]:
    prices = {t: table.instance_hourly(region, t) for t in table.instance_types(region) if is_gpu_family(instance_family(t))}
    return min(prices, key=lambda t: (prices[t], t)) if prices else None


def _priced(spec: _Spec, configured: bool, shared_name: bool, region: str, count: int,
            baseline_monthly: Optional[float], assumptions: Assumptions, table: PriceTable, idle: float = 0.0) -> Option:
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
        if spec.scales_to_zero:  # billed for the active share of the month; $/hour averaged over the month
            monthly = estimate.monthly_cost_when_active(region, spec.instance_type, spec.accelerator_type, count, idle, table)
            hourly = None if monthly is None else monthly / estimate.HOURS_PER_MONTH
            notes += [f"no instance while idle ({idle:.0%})", "cold start after idle not priced"]
        else:
            hourly = estimate.hourly_cost(region, spec.instance_type, spec.accelerator_type, count, table)
            monthly = estimate.monthly_cost(region, spec.instance_type, spec.accelerator_type, count, table)
        per_million = estimate.cost_per_million(
            estimate.hourly_cost(region, spec.instance_type, spec.accelerator_type, 1, table), latency)
        if spec.profile == "async" and monthly is not None:  # S3 and SNS requests: per inference, idle or not
            requests = estimate.async_requests_monthly(rate, assumptions.async_request_usd)
            monthly += requests
            hourly = monthly / estimate.HOURS_PER_MONTH if spec.scales_to_zero else hourly
            notes.append(f"incl. ${requests:,.2f} S3 + SNS requests")
            per_million = None if per_million is None else per_million + assumptions.async_request_usd * 1_000_000
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
    label = f"{spec.name} (configured)" if configured and shared_name else spec.name
    return Option(spec.profile, label, configured, spec.instance_type, spec.accelerator_type, count_or_none,
                  spec.memory_size_mb, latency, hourly, monthly, estimate.saving(baseline_monthly, monthly),
                  per_million, tuple(notes), spec.scales_to_zero, idle if spec.scales_to_zero else 0.0)


# ---------------------------------------------------------------- rendering

COLUMNS = ("option", "resources", "$/hour", "$/month", "vs GPU", "vs configured", "$/1M inferences", "notes")


def _money(value: Optional[float], digits: int = 2) -> str:
    return NA if value is None else f"{value:,.{digits}f}"


def _saving(value: Optional[float]) -> str:
    if value is None:
        return NA
    if abs(value) < 0.0005:
        return "same"
    return f"{abs(value):.1%} {'less' if value > 0 else 'more'}"


def _row(option: Option, rate: float) -> Tuple[str, ...]:
    name = f"{option.name} *" if option.configured else option.name
    versus_configured = "" if option.configured else _saving(option.saving_vs_configured)
    return (name, option.resources(rate), _money(option.hourly, 3), _money(option.monthly), _saving(option.saving_vs_gpu),
            versus_configured, _money(option.cost_per_million), "; ".join(option.notes))


def header_lines(table: PriceTable, assumptions: Assumptions) -> List[str]:
    live = [table.live_note] if table.live_note else []
    return [
        f"prices: {table.describe()}; {estimate.HOURS_PER_MONTH} h/month",
        *live,
        f"assumptions: {assumptions.describe()}",
        f"* = configured profile; vs GPU = monthly cost against {estimate.BASELINE_GPU_INSTANCE} always on, "
        "same instance count; vs configured = monthly cost against the configured profile; "
        "$/1M inferences = one instance busy one request at a time (serverless: per request)",
        "to zero = scales to zero instances while idle (scaling.min_instances: 0 on cpu/gpu, serving.profile: async): "
        "billed for the environment's active share of the month at min_instances (at least 1); $/hour averaged over the month",
    ]


SAVINGS_COLUMNS = ("environment", "idle", "configured $/month", *(f"{p} to zero" for p in TO_ZERO_ALTERNATIVES))


def savings_rows(estimates: Sequence[ModelEstimate], assumptions: Assumptions) -> List[Tuple[str, ...]]:
    """Per environment, all its models: the configured profiles' monthly total, and each scale-to-zero option's
    total with what it saves against it ("n/a" when a price is missing)."""
    rows = []
    for environment in dict.fromkeys(item.environment for item in estimates):
        items = [item for item in estimates if item.environment == environment]
        configured = _total(next(o for o in item.options if o.configured) for item in items)
        cells = [environment, f"{assumptions.idle(environment):.0%}", _money(configured)]
        for profile in TO_ZERO_ALTERNATIVES:
            total = _total(next(o for o in item.options if o.profile == profile and o.scales_to_zero) for item in items)
            cells.append(NA if total is None else f"{_money(total)} ({_saving(estimate.saving(configured, total))})")
        rows.append(tuple(cells))
    return rows


def _total(options) -> Optional[float]:
    values = [option.monthly for option in options]
    return None if any(v is None for v in values) else sum(values)


def render_text(estimates: Sequence[ModelEstimate], table: PriceTable, assumptions: Assumptions) -> str:
    lines = header_lines(table, assumptions)
    rate = assumptions.requests_per_second
    for item in estimates:
        rows = [COLUMNS] + [_row(option, rate) for option in item.options]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        right = {2, 3, 6}  # numbers
        lines += ["", f"{item.environment} ({item.region}) / {item.model}: configured profile {item.configured_profile}"]
        for row in rows:
            cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
            lines.append(("  " + "  ".join(cells)).rstrip())
    rows = [SAVINGS_COLUMNS] + savings_rows(estimates, assumptions)
    widths = [max(len(row[i]) for row in rows) for i in range(len(SAVINGS_COLUMNS))]
    lines += ["", "scale to zero and async, every model of the environment, $/month (saving against the configured profiles)"]
    lines += [("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(estimates: Sequence[ModelEstimate], table: PriceTable, assumptions: Assumptions) -> str:
    lines = [f"- {line}" for line in header_lines(table, assumptions)] + [""]
    lines.append("| environment | model | " + " | ".join(COLUMNS) + " |")
    lines.append("|---|---|" + "|".join("---:" if c.startswith("$") or c.startswith("vs ") else "---" for c in COLUMNS) + "|")
    for item in estimates:
        for option in item.options:
            cells = (f"{item.environment} ({item.region})", item.model) + _row(option, assumptions.requests_per_second)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Scale to zero and async, every model of the environment, $/month (saving against the configured profiles):", "",
              "| " + " | ".join(SAVINGS_COLUMNS) + " |", "|---|---:|" + "---:|" * (len(SAVINGS_COLUMNS) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in savings_rows(estimates, assumptions)]
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

