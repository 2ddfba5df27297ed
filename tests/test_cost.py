"""make cost: the price table, the arithmetic, the report and the live prices (stubbed, never the network)."""
import contextlib
import datetime
import io
import json
from dataclasses import replace
from pathlib import Path
import re
import subprocess
import sys

import botocore.session
import pytest
from botocore.stub import Stubber

from config.serving_targets import PROFILE_DEFAULTS
from cost import estimate, prices, report
from config import load_config
from cost.__main__ import main
from tests.conftest import REPO, make_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHIPPED = json.loads((REPO / "cost" / "data" / "sagemaker-hosting-prices.json").read_text())

# Round numbers, so the expected values below can be checked by hand.
HAND_TABLE = {
    "as_of": "2024-01-31",
    "source": "test",
    "currency": "USD",
    "regions": {
        "xx-test-1": {
            "instances": {"ml.m5.large": 0.1, "ml.c5.xlarge": 0.2, "ml.g4dn.xlarge": 0.8, "ml.g5.xlarge": 1.6},
            "accelerators": {"ml.eia2.medium": 0.15},
            "serverless": {"per_gb_second": 0.00002, "per_gb_processed": 0.016},
        }
    },
}


@pytest.fixture
def hand_table(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(HAND_TABLE))
    return prices.read_table(path)


# ---------------------------------------------------------------- arithmetic, by hand


def test_eia_month_is_host_plus_accelerator_for_730_hours(hand_table):
    assert estimate.monthly_cost("xx-test-1", "ml.m5.large", "ml.eia2.medium", table=hand_table) == pytest.approx(182.5)  # 0.25 x 730
    assert estimate.monthly_cost("xx-test-1", "ml.m5.large", "ml.eia2.medium", 3, table=hand_table) == pytest.approx(547.5)
    assert estimate.hourly_cost("xx-test-1", "ml.c5.xlarge", table=hand_table) == pytest.approx(0.2)


def test_shipped_table_prices_the_seed_recipe():
    us = SHIPPED["regions"]["us-east-1"]
    expected = (us["instances"]["ml.m5.large"] + us["accelerators"]["ml.eia2.medium"]) * 730
    assert estimate.monthly_cost("us-east-1", "ml.m5.large", "ml.eia2.medium") == pytest.approx(expected)
    assert expected == pytest.approx((0.115 + 0.168) * 730)  # 206.59: the table's figures, as documented


def test_saving_against_an_always_on_gpu(hand_table):
    gpu = estimate.monthly_cost("xx-test-1", "ml.g4dn.xlarge", table=hand_table)  # 584
    eia = estimate.monthly_cost("xx-test-1", "ml.m5.large", "ml.eia2.medium", table=hand_table)  # 182.5
    assert estimate.saving(gpu, eia) == pytest.approx(1 - 182.5 / 584)  # 68.75 % cheaper
    assert estimate.saving(gpu, 2 * gpu) == pytest.approx(-1.0)  # twice the price: 100 % more
    assert estimate.saving(None, eia) is None and estimate.saving(gpu, None) is None


def test_cost_per_million_from_latency():
    # 80 ms: 45,000 inferences an hour; 0.25 $/h / 45,000 x 1e6 = 5.5556 $
    assert estimate.inferences_per_hour(80) == pytest.approx(45_000)
    assert estimate.cost_per_million(0.25, 80) == pytest.approx(5.5556, abs=1e-4)
    # 800 ms on a 0.2 $/h CPU: 4,500 an hour -> 44.44 $
    assert estimate.cost_per_million(0.2, 800) == pytest.approx(44.444, abs=1e-3)
    assert estimate.cost_per_million(None, 80) is None


def test_serverless_gb_seconds_and_data(hand_table):
    # 3 GB x 0.8 s x 0.00002 = 0.000048 $ compute; 100 KB x 0.016 $/GB = 0.0000015259 $ data
    per_inference = estimate.serverless_cost_per_inference("xx-test-1", 3072, 800, 100, table=hand_table)
    assert per_inference == pytest.approx(0.000048 + 100 / 1024 / 1024 * 0.016)
    # 1 req/s for 730 h = 2,628,000 inferences
    monthly = estimate.monthly_serverless_cost("xx-test-1", 3072, 1.0, 800, 0, table=hand_table)
    assert monthly == pytest.approx(0.000048 * 2_628_000)  # 126.144
    assert estimate.monthly_serverless_cost("xx-test-1", 3072, 2.0, 800, 0, table=hand_table) == pytest.approx(2 * monthly)


def test_instances_needed_one_request_at_a_time():
    assert estimate.instances_needed(1.0, 800) == 1
    assert estimate.instances_needed(5.0, 800) == 4
    assert estimate.instances_needed(0.01, 80) == 1


def test_unknown_region_or_type_is_none_not_an_error():
    assert estimate.monthly_cost("ap-nowhere-9", "ml.m5.large") is None
    assert estimate.monthly_cost("us-east-1", "ml.x99.huge") is None
    assert estimate.monthly_cost("us-east-1", "ml.m5.large", "ml.eia9.tiny") is None  # host known, accelerator not
    assert estimate.monthly_cost("us-east-1", None) is None  # serverless has no instance type
    assert estimate.monthly_serverless_cost("ap-nowhere-9", 3072, 1.0, 800, 100) is None
    assert estimate.monthly_cost("us-east-1", "ml.g4dn.xlarge", instance_count=2) == pytest.approx(0.7364 * 730 * 2)


def test_the_synth_time_functions_import_nothing_heavy():
    code = ("import sys, cost.estimate; heavy = [m for m in ('matplotlib', 'boto3', 'botocore', 'config', 'yaml') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the shipped table


def test_price_table_shape():
    table = prices.default_table()
    as_of = datetime.date.fromisoformat(SHIPPED["as_of"])
    assert datetime.date(2023, 1, 1) <= as_of <= datetime.date.today()
    assert "aws.amazon.com/sagemaker/pricing" in SHIPPED["source"] and SHIPPED["currency"] == "USD"
    assert {"us-east-1", "us-west-2", "eu-west-1"} <= set(SHIPPED["regions"])
    defaults = {s.instance_type for s in PROFILE_DEFAULTS.values() if s.instance_type}
    alternatives = {"ml.m5.large", "ml.m5.xlarge", "ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge", "ml.c6i.xlarge",
                    "ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g5.xlarge", "ml.g6.xlarge", "ml.inf2.xlarge"}
    accelerators = {f"ml.eia{g}.{s}" for g in (1, 2) for s in ("medium", "large", "xlarge")}
    for region, entry in SHIPPED["regions"].items():
        assert entry["notes"].strip(), region
        assert defaults | alternatives <= set(entry["instances"]), region
        assert accelerators <= set(entry["accelerators"]), region
        assert table.serverless(region) is not None
        for section in ("instances", "accelerators"):
            assert all(0 < price < 50 for price in entry[section].values()), (region, section)


def test_a_malformed_table_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**HAND_TABLE, "as_of": "last week", "source": ""}))
    with pytest.raises(ValueError, match=r"as_of = 'last week' is not a YYYY-MM-DD date.*source must be"):
        prices.read_table(path)


# ---------------------------------------------------------------- the CLI on the shipped config


SHIPPED_CONFIG = ["--config", str(REPO / "config")]


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cost")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(SHIPPED_CONFIG + ["--out", str(out)])
    return status, buffer.getvalue(), out


SHIPPED_MODELS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "config" / "models").glob("*.yaml"))


def test_cli_prints_every_environment_and_option(shipped_run):
    status, text, _ = shipped_run
    assert status == 0
    assert "as of " + SHIPPED["as_of"] in text and "cost/assumptions.yaml" in text
    sections = text.split("\n\n")[1:]
    for env in ("dev", "staging", "prod"):
        section = next(s for s in sections if s.startswith(f"{env} (us-east-1) / image-classifier"))
        rows = section.splitlines()[2:]
        assert [_name(row) for row in rows] == ["eia *", "gpu", "cpu", "serverless", *TO_ZERO_ROWS], section
        eia = rows[0]
        assert "eia *" in eia and "1 x ml.m5.large + ml.eia2.medium" in eia and "206.59" in eia
        assert "61.6% less" in eia  # 1 - 206.59 / 537.572
        assert "537.57" in rows[1] and "same" in rows[1] and "ml.g4dn.xlarge" in rows[1]
        assert "3072 MB" in rows[3]


TO_ZERO_ROWS = ["cpu to zero", "gpu to zero", "async to zero"]


def _name(row: str) -> str:
    return re.split(r"\s{2,}", row.strip())[0]


def test_cli_writes_png_json_and_markdown(shipped_run):
    _, _, out = shipped_run
    png = (out / "cost.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    document = json.loads((out / "cost.json").read_text())
    environments = [e["environment"] for e in document["estimates"]]
    assert list(dict.fromkeys(environments)) == ["dev", "staging", "prod"]  # in promotion order, every model
    assert len(environments) == 3 * len(SHIPPED_MODELS)
    assert document["prices"]["as_of"] == SHIPPED["as_of"]
    configured = document["estimates"][0]["options"][0]
    assert configured["configured"] and configured["monthly"] == pytest.approx(206.59)
    markdown = (out / "cost.md").read_text()
    assert markdown.count("| prod (us-east-1) | image-classifier |") == 7


def test_missing_prices_print_na_and_the_chart_still_draws(tmp_path, capsys):
    config_dir = make_config(tmp_path / "config", lambda m: m["serving"].update(
        profile="gpu", profiles={**m["serving"]["profiles"], "gpu": {"instance_type": "ml.p3.2xlarge", "framework_version": "2.6.0"}}))
    status = main(["--config", str(config_dir), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert status == 0
    configured = next(line for line in text.splitlines() if line.strip().startswith("gpu *"))
    assert "ml.p3.2xlarge" in configured and configured.count("n/a") == 4  # $/h, $/month, vs GPU, $/1M
    assert "no price for ml.p3.2xlarge in us-east-1" in configured
    cheapest = next(line for line in text.splitlines() if line.strip().startswith("gpu ") and "*" not in line)
    assert "ml.g4dn.xlarge" in cheapest and "537.57" in cheapest
    assert (tmp_path / "out" / "cost.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_region_missing_from_the_table_is_all_na(tmp_path, capsys):
    table = tmp_path / "prices.json"
    table.write_text(json.dumps(HAND_TABLE))
    status = main(SHIPPED_CONFIG + ["--prices", str(table), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert status == 0
    options = text.split("\nscale to zero and async")[0]
    rows = [line for line in options.splitlines() if line.startswith("  ") and not line.strip().startswith("option")]
    assert len(rows) == 7 * 3 * len(SHIPPED_MODELS) and all("n/a" in row for row in rows)  # options x envs x models
    assert "as of 2024-01-31" in text
    document = json.loads((tmp_path / "out" / "cost.json").read_text())
    assert all(o["monthly"] is None for e in document["estimates"] for o in e["options"])
    assert (tmp_path / "out" / "cost.png").stat().st_size > 0


def test_flags_override_the_assumptions(tmp_path, capsys):
    status = main(SHIPPED_CONFIG + ["--out", str(tmp_path), "--no-chart", "--requests-per-second", "5", "--latency-ms", "cpu=400", "eia=40"])
    text = capsys.readouterr().out
    assert status == 0 and not (tmp_path / "cost.png").exists()
    assert "5 req/s" in text and "cpu 400" in text
    cpu = next(line for line in text.splitlines() if line.strip().startswith("cpu "))
    assert "22.67" in cpu and "needs 2 instances at 5 req/s ($298/month)" in cpu  # 0.204 / 9,000 x 1e6; ceil(5 x 0.4)
    eia = next(line for line in text.splitlines() if line.strip().startswith("eia *"))
    assert "3.14" in eia  # 0.283 / 90,000 x 1e6


def test_bad_flags_and_files_exit_1_with_one_line(tmp_path, capsys):
    assert main(SHIPPED_CONFIG + ["--out", str(tmp_path), "--latency-ms", "tpu=3"]) == 1
    assert "profile must be one of eia, gpu, cpu, serverless, async" in capsys.readouterr().err
    assert main(SHIPPED_CONFIG + ["--out", str(tmp_path), "--idle-fraction", "dev=1"]) == 1
    assert "idle_fraction.dev = 1.0" in capsys.readouterr().err
    assert main(SHIPPED_CONFIG + ["--out", str(tmp_path), "--idle-fraction", "dev=most"]) == 1
    assert "--idle-fraction 'dev=most': 'most' is not a fraction" in capsys.readouterr().err
    assert main(SHIPPED_CONFIG + ["--out", str(tmp_path), "--requests-per-second", "0"]) == 1
    assert "requests_per_second = 0.0" in capsys.readouterr().err
    assert main(SHIPPED_CONFIG + ["--out", str(tmp_path), "--prices", str(tmp_path / "missing.json")]) == 1
    assert "cannot read the price table" in capsys.readouterr().err


# ---------------------------------------------------------------- live prices, stubbed


def _pricing_client(**credentials):
    return botocore.session.get_session().create_client("pricing", region_name="us-east-1", **credentials)


def _product(usage_type, usd, unit="Hrs"):
    return json.dumps({
        "product": {"attributes": {"usagetype": usage_type}},
        "terms": {"OnDemand": {"T1": {"priceDimensions": {"D1": {"unit": unit, "pricePerUnit": {"USD": usd}}}}}},
    })


def _request(region, name, token=None):
    params = {"ServiceCode": "AmazonSageMaker", "MaxResults": 100, "Filters": [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "instanceName", "Value": name},
        {"Type": "TERM_MATCH", "Field": "component", "Value": "Hosting"},
    ]}
    if token:
        params["NextToken"] = token
    return params


def test_live_prices_replace_the_table_where_the_api_answers():
    client = _pricing_client(aws_access_key_id="testing", aws_secret_access_key="testing")
    with Stubber(client) as stubber:
        # sorted order: ml.eia2.medium, then ml.m5.large over two pages
        stubber.add_response("get_products", {"PriceList": [], "FormatVersion": "aws_v1"}, _request("us-east-1", "ml.eia2.medium"))
        stubber.add_response("get_products", {"PriceList": [_product("USE1-Notebk:ml.m5.large", "0.5000000000")],
                                              "NextToken": "page2"}, _request("us-east-1", "ml.m5.large"))
        stubber.add_response("get_products", {"PriceList": [_product("USE1-Host:ml.m5.large", "0.1200000000")]},
                             _request("us-east-1", "ml.m5.large", "page2"))
        table = prices.with_live_prices(prices.default_table(), {"us-east-1": ["ml.m5.large", "ml.eia2.medium"]},
                                        client=client, today=datetime.date(2026, 1, 2))
        stubber.assert_no_pending_responses()
    assert table.instance_hourly("us-east-1", "ml.m5.large") == pytest.approx(0.12)  # the Host: product, not the notebook
    assert table.accelerator_hourly("us-east-1", "ml.eia2.medium") == pytest.approx(0.168)  # unanswered: the table's
    assert prices.default_table().instance_hourly("us-east-1", "ml.m5.large") == pytest.approx(0.115)  # not mutated
    assert "1 hourly prices live from the AWS Pricing API on 2026-01-02" in table.live_note
    assert "ml.eia2.medium in us-east-1" in table.live_note
    assert estimate.monthly_cost("us-east-1", "ml.m5.large", "ml.eia2.medium", table=table) == pytest.approx((0.12 + 0.168) * 730)


def test_an_ambiguous_answer_is_not_guessed():
    products = [_product("USE1-Foo:ml.m5.large", "0.2"), _product("USE1-Bar:ml.m5.large", "0.3")]
    assert prices.hourly_price_from_products(products, "ml.m5.large") is None
    assert prices.hourly_price_from_products([_product("anything", "0.3")], "ml.m5.large") == pytest.approx(0.3)
    assert prices.hourly_price_from_products([_product("USE1-Host:ml.m5.large", "0.3", unit="Quantity")], "ml.m5.large") is None


def test_without_credentials_live_falls_back_to_the_table(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup either
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    client = _pricing_client()
    sent = []
    client.meta.events.register("before-send", lambda request, **_: sent.append(request.url))
    table = prices.with_live_prices(prices.default_table(), {"us-east-1": ["ml.m5.large"]}, client=client)
    assert sent == []  # refused before anything left the machine
    assert table.live_note.startswith("live prices unavailable (NoCredentialsError: Unable to locate credentials)")
    assert table.live_note.endswith(f"using the table as of {SHIPPED['as_of']}")
    assert table.instance_hourly("us-east-1", "ml.m5.large") == pytest.approx(0.115)


def test_cli_live_denied_prints_one_line_and_uses_the_table(tmp_path, capsys):
    client = _pricing_client(aws_access_key_id="testing", aws_secret_access_key="testing")
    with Stubber(client) as stubber:
        stubber.add_client_error("get_products", "AccessDeniedException", "not allowed: pricing:GetProducts")
        status = main(SHIPPED_CONFIG + ["--live", "--no-chart", "--out", str(tmp_path)], pricing_client=client)
    text = capsys.readouterr().out
    assert status == 0
    notes = [line for line in text.splitlines() if "live prices unavailable" in line]
    assert notes == ["live prices unavailable (AccessDeniedException: An error occurred (AccessDeniedException) "
                     "when calling the GetProducts operation: not allowed: pricing:GetProducts); using the table as of "
                     f"{SHIPPED['as_of']}"]
    assert "206.59" in text


# ---------------------------------------------------------------- scale to zero and async: the idle fraction


def _assumptions(**idle):
    return report.Assumptions(1.0, 0.0, {p: 800.0 for p in report.PROFILES}, "test", idle)


def test_scale_to_zero_bills_only_the_active_share(hand_table):
    # 0.2 $/h x 730 h x (1 - 0.75) = 36.5 $; the always-on month is 146 $
    assert estimate.monthly_cost_when_active("xx-test-1", "ml.c5.xlarge", None, 1, 0.75, table=hand_table) == pytest.approx(36.5)
    assert estimate.monthly_cost_when_active("xx-test-1", "ml.c5.xlarge", None, 1, 0.0, table=hand_table) == pytest.approx(146)
    assert estimate.monthly_cost_when_active("xx-test-1", "ml.x99.huge", None, 1, 0.75, table=hand_table) is None


def test_to_zero_rows_against_the_configured_profile_by_hand(hand_table):
    deployment = load_config(REPO / "config").environment("dev").models[0]  # image-classifier, eia, min_instances 1
    item = report.estimate_model("dev", "xx-test-1", deployment, _assumptions(dev=0.75), hand_table)
    rows = {option.name: option for option in item.options}
    assert list(rows) == ["eia", "gpu", "cpu", "serverless", *TO_ZERO_ROWS]
    assert rows["eia"].configured and rows["eia"].monthly == pytest.approx(182.5)  # (0.1 + 0.15) x 730
    assert rows["cpu to zero"].monthly == pytest.approx(36.5)  # 0.2 x 730 x 0.25
    assert rows["cpu to zero"].saving_vs_configured == pytest.approx(0.8)  # 1 - 36.5 / 182.5
    assert rows["gpu to zero"].monthly == pytest.approx(146)  # the cheapest GPU, 0.8 x 730 x 0.25
    assert rows["async to zero"].monthly == pytest.approx(36.5)  # the async profile's ml.c5.xlarge
    assert rows["cpu"].monthly == pytest.approx(146) and rows["cpu"].saving_vs_configured == pytest.approx(0.2)
    # The async profile's S3 and SNS requests follow the traffic, not the instances: 1 req/s x 2,628,000 s x
    # (2 PUTs x 0.005 + 1 GET x 0.0004) / 1000 + 1 SNS x 0.5 / 1e6 = 2,628,000 x 0.0000109 = 28.6452 $
    usd = (2 * 0.005 + 0.0004) / 1000 + 0.5 / 1_000_000
    assert report.load_assumptions().async_request_usd == pytest.approx(usd)
    priced = {o.name: o for o in report.estimate_model("dev", "xx-test-1", deployment,
                                                        replace(_assumptions(dev=0.75), async_request_usd=usd), hand_table).options}
    assert priced["async to zero"].monthly == pytest.approx(36.5 + 28.6452)
    assert priced["async to zero"].cost_per_million == pytest.approx(0.2 / 4500 * 1e6 + 10.9)  # 44.44 + 10.90
    assert "incl. $28.65 S3 + SNS requests" in priced["async to zero"].notes
    assert priced["cpu to zero"].monthly == pytest.approx(36.5)  # real-time: no request charges besides the instance
    # An environment with no idle fraction is never idle: scaling to zero saves nothing there.
    prod = {o.name: o for o in report.estimate_model("prod", "xx-test-1", deployment, _assumptions(dev=0.75), hand_table).options}
    assert prod["cpu to zero"].monthly == pytest.approx(prod["cpu"].monthly)


def test_a_configured_scale_to_zero_model_is_priced_at_one_instance_when_active(hand_table):
    shipped = load_config(REPO / "config").environment("dev").models[0]
    deployment = replace(shipped, scaling=shipped.scaling.model_copy(update={"min_instances": 0}),
                         target=replace(shipped.target, profile="cpu", instance_type="ml.c5.xlarge", accelerator_type=None))
    item = report.estimate_model("dev", "xx-test-1", deployment, _assumptions(dev=0.5), hand_table)
    (configured,) = [o for o in item.options if o.configured]
    assert configured.name == "cpu to zero" and item.configured_profile == "cpu to zero"
    assert configured.instance_count == 1 and configured.monthly == pytest.approx(73)  # 0.2 x 730 x 0.5
    assert [o.name for o in item.options].count("cpu to zero") == 1  # not repeated as an alternative
    always_on = next(o for o in item.options if o.name == "cpu")
    assert always_on.monthly == pytest.approx(146) and always_on.saving_vs_configured == pytest.approx(-1.0)


def test_cli_shows_what_scale_to_zero_and_async_save_in_dev_and_staging(shipped_run):
    _, text, out = shipped_run
    summary = text.split("\nscale to zero and async")[1].splitlines()
    rows = {line.split()[0]: line for line in summary[2:] if line.startswith("  ")}
    assert set(rows) == {"dev", "staging", "prod"}
    for env, idle in (("dev", "70%"), ("staging", "80%")):
        assert rows[env].split()[1] == idle and rows[env].count("less") == 3, rows[env]
    # dev, both models on EIA: (0.115 + 0.168) x 730 + (0.204 + 0.54) x 730 = 600.79; cpu/async to zero 2 x 148.92 x 0.3
    assert "600.79" in rows["dev"] and "89.35 (85.1% less)" in rows["dev"]
    assert "0%" in rows["prod"]
    markdown = (out / "cost.md").read_text()
    assert "| dev | 70% | 600.79 | 89.35 (85.1% less) |" in markdown
    dev = next(s for s in text.split("\n\n") if s.startswith("dev (us-east-1) / image-classifier"))
    cpu_to_zero = next(line for line in dev.splitlines() if _name(line) == "cpu to zero")
    assert "1 x ml.c5.xlarge, 30% of the month" in cpu_to_zero and "44.68" in cpu_to_zero  # 0.204 x 730 x 0.3


def test_idle_fraction_flag_overrides_the_file(tmp_path, capsys):
    assert main(SHIPPED_CONFIG + ["--out", str(tmp_path), "--no-chart", "--idle-fraction", "dev=0.9"]) == 0
    text = capsys.readouterr().out
    assert "idle share of the month dev 90%, staging 80%, prod 0%" in text
    dev = next(s for s in text.split("\n\n") if s.startswith("dev (us-east-1) / image-classifier"))
    assert "14.89" in next(line for line in dev.splitlines() if _name(line) == "cpu to zero")  # 0.204 x 730 x 0.1
