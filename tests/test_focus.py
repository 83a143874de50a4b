"""The forecast in FOCUS 1.3 Cost and Usage shape: every FOCUS rule a forecast can be held to, checked here (the
official focus-validator 2.x needs Python 3.12+; `test_official_validator` runs it when one is available), and
FOCUS-shaped actuals read back by the backtest."""

import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.cli import main
from kimiplan.errors import ConfigError
from kimiplan.finance.backtest import backtest
from kimiplan.finance.focus import FOCUS_COLUMNS, METERS, NULL_COLUMNS, VALIDATOR_CRITERIA, focus_frame
from kimiplan.finance.forecast import forecast
from kimiplan.io.export import to_focus
from kimiplan.io.paths import data_path

# Columns FOCUS 1.2 says MUST be present (focus-validator's model-1.2.0.1.json, rules CostAndUsage-D-*-M), the
# conditional ones a Kimi forecast meets (unit prices, SKUs, quantities, pricing currency), and 1.3's
# ServiceProviderName and HostProviderName (which replace the deprecated ProviderName and PublisherName).
MANDATORY = {
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
}  # fmt: skip
CONDITIONAL_MET = {
    "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice", "PricingCategory",
    "PricingCurrency", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId",
}  # fmt: skip
FOCUS_13 = {"ServiceProviderName", "HostProviderName"}
REPO = Path(__file__).resolve().parents[1]
NOT_NULL = MANDATORY - {"ChargeClass"} | CONDITIONAL_MET | FOCUS_13  # for Usage rows of list-priced SKUs
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")  # FOCUS DateTimeFormat, UTC
# FOCUS UnitFormat: a count unit, or "<quantity> <units>" (the validator's FormatUnit patterns 1 and 4)
UNIT = re.compile(r"^([0-9]+ )?[A-Za-z][A-Za-z0-9]*(\s+[A-Za-z][A-Za-z0-9]*)*$")
ALLOWED = {  # allowed values, from the 1.2 rules (rule ids in the comments)
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},  # ChargeCategory-C-003-M
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},  # ChargeFrequency-C-003-M
    "PricingCategory": {"Standard", "Committed", "Dynamic", "Other"},  # PricingCategory-C-007-M
    "ServiceCategory": {"AI and Machine Learning", "Other"},  # ServiceCategory-C-003-M (subset)
    "ServiceSubcategory": {"Generative AI", "Other (AI and Machine Learning)"},  # ServiceSubcategory-C-003-M
}


@pytest.fixture(scope="module")
def fc():
    sc = load_scenario("support_chat")
    return forecast(sc, 3, paths=300, seed=3)


@pytest.fixture(scope="module")
def rows(fc):
    return focus_frame(fc)


def test_one_row_per_route_meter_month_quantile(fc, rows):
    routes = [r.name for r in fc.scenario.routes]
    assert set(rows["x_Route"]) == set(routes) and set(rows["x_Quantile"]) == {"P10", "P50", "P90"}
    # One row per charge period: a month, or its part before and after a dated price change (the $web_search
    # fee changed on 2026-11-29) with its own SkuPriceId.
    key = ["x_Route", "x_TokenClass", "ChargePeriodStart", "x_Quantile"]
    assert not rows.duplicated(key).any()
    nov = rows[(rows.BillingPeriodStart == "2026-11-01T00:00:00Z") & (rows.x_TokenClass == "tool_calls")]
    assert set(nov["ChargePeriodStart"]) == {"2026-11-01T00:00:00Z", "2026-11-29T00:00:00Z"}
    assert nov["SkuPriceId"].nunique() == 2
    per = rows.groupby(["x_Route", "BillingPeriodStart", "x_Quantile"]).size()
    assert len(per) == len(routes) * 3 * 3 and per.min() >= 4  # hit, miss, output, $web_search at least
    assert set(rows["x_TokenClass"]) <= set(METERS) and rows["x_Forecast"].all()


def test_meters_sum_to_the_routes_quantile_and_expected_tokens(fc, rows):
    br = fc.by_route.set_index(["month", "route"])
    rows = rows.assign(month=rows["BillingPeriodStart"].str[:7])
    for (month, route, q), g in rows.groupby(["month", "x_Route", "x_Quantile"]):
        assert math.isclose(g["BilledCost"].sum(), br.loc[(month, route), q], rel_tol=1e-9), (month, route, q)
    # At the quantile that equals the expected cost the quantities are the forecast's expected tokens.
    e = fc.expected[fc.expected["price_class"].isin(list(METERS))]
    tok = e[e.price_class != "tool_calls"].groupby(["month", "route"])["tokens"].sum()
    p50 = rows[(rows.x_Quantile == "P50") & (rows.ConsumedUnit == "Tokens")].groupby(["month", "x_Route"])
    for (month, route), g in p50:
        exp_cost = e[(e.month == month) & (e.route == route)]["cost"].sum()
        ratio = br.loc[(month, route), "P50"] / exp_cost
        assert math.isclose(g["ConsumedQuantity"].sum(), tok.loc[(month, route)] * ratio, rel_tol=1e-9)


def test_prices_are_the_catalogs_list_prices(fc, rows):
    card = load_catalog().price("kimi-k2.6", on=dt.date(2026, 11, 1))
    price = {
        "input_cache_hit": float(card.cache_hit_price),
        "input_cache_miss": float(card.input_cache_miss),
        "output": float(card.output),
        "tool_calls": float(card.web_search_per_call),
    }
    for r in rows.itertuples():
        if r.x_TokenClass == "tool_calls":  # the dated fee in force over the charge period
            price["tool_calls"] = 0.004 if r.ChargePeriodStart < "2026-11-29" else 0.005
        assert math.isclose(r.ListUnitPrice, price[r.x_TokenClass], rel_tol=1e-9) or r.PricingQuantity == 0
        assert math.isclose(r.ListCost, r.ListUnitPrice * r.PricingQuantity, rel_tol=1e-9, abs_tol=1e-12)
        if r.ConsumedUnit == "Tokens":
            assert r.PricingUnit == "1000000 Tokens" and math.isclose(r.PricingQuantity * 1e6, r.ConsumedQuantity)
        else:
            assert r.PricingUnit == r.ConsumedUnit == "Requests" and r.PricingQuantity == r.ConsumedQuantity
        json.loads(r.SkuPriceDetails)  # KeyValueFormat: a JSON object


def test_focus_rules_a_forecast_can_meet(rows):
    cols = set(rows.columns)
    assert MANDATORY | CONDITIONAL_MET | FOCUS_13 <= cols
    assert all(c in FOCUS_COLUMNS or c.startswith("x_") for c in cols)  # custom columns are x_-prefixed
    for c in NOT_NULL:
        assert rows[c].notna().all(), c
    for c in NULL_COLUMNS:  # not a correction, no commitment discount, no invoice
        assert rows[c].isna().all() and rows[c].dtype == "string", c
    for c in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
        assert rows[c].map(lambda v: bool(DATETIME.match(v))).all(), c
    assert (rows["ChargePeriodStart"] < rows["ChargePeriodEnd"]).all()
    assert (rows["BillingPeriodStart"] <= rows["ChargePeriodStart"]).all()
    assert (rows["ChargePeriodEnd"] <= rows["BillingPeriodEnd"]).all()
    for c, allowed in ALLOWED.items():
        assert set(rows[c]) <= allowed, c
    for c in ("ConsumedUnit", "PricingUnit"):
        assert rows[c].map(lambda v: bool(UNIT.match(v))).all(), c
    assert rows["BillingCurrency"].str.fullmatch(r"[A-Z]{3}").all()
    money = ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice"]
    for c in [*money, "ConsumedQuantity", "PricingQuantity"]:
        assert rows[c].map(lambda v: isinstance(v, float) and math.isfinite(v) and v >= 0).all(), c
    # No discounts and no commitments on a list-price forecast: every cost equals the list cost.
    for c in ("BilledCost", "EffectiveCost", "ContractedCost"):
        assert (rows[c] == rows["ListCost"]).all(), c
    assert (rows["ChargeCategory"] == "Usage").all() and (rows["ChargeFrequency"] == "Usage-Based").all()


def test_csv_and_parquet_files(rows, tmp_path):
    csv = to_focus(rows, tmp_path / "f.csv")
    text = csv.read_text()
    body = "\n".join(line for line in text.splitlines()[1:])
    assert not re.search(r"\d[eE][+-]?\d", body.replace("support-chat", ""))  # no e-notation
    back = pd.read_csv(csv)
    assert list(back.columns) == list(rows.columns) and len(back) == len(rows)
    assert math.isclose(back["BilledCost"].sum(), rows["BilledCost"].sum(), rel_tol=1e-9)
    pq = to_focus(rows, tmp_path / "f.parquet")
    assert pd.read_parquet(pq).equals(rows)
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        to_focus(rows, tmp_path / "f.xlsx")


def test_cli_forecast_focus(tmp_path, capsys):
    out = tmp_path / "forecast.parquet"
    assert main(["forecast", "support_chat", "--months", "2", "--paths", "200", "--focus", str(out)]) == 0
    assert "FOCUS 1.3 rows" in capsys.readouterr().out
    df = pd.read_parquet(out)
    assert df["x_Forecast"].all() and set(df["x_Quantile"]) == {"P10", "P50", "P90"}


def _focus_actuals(usage: pd.DataFrame, with_requests: bool) -> pd.DataFrame:
    """A daily usage log as a provider's FOCUS export would carry it: one row per day, route and token class."""
    out = []
    for r in usage.itertuples():
        start = f"{r.date}T00:00:00Z"
        for klass, qty in (
            ("input_cache_hit", r.cached_tokens),
            ("input_cache_miss", r.prompt_tokens - r.cached_tokens),
            ("output", r.completion_tokens),
            ("tool_calls", r.web_search_calls),
        ):
            row = {"ChargePeriodStart": start, "ChargeCategory": "Usage", "ConsumedQuantity": qty,
                   "SkuMeter": METERS[klass][0], "Tags": json.dumps({"route": r.route})}  # fmt: skip
            if with_requests:
                row["x_Requests"] = r.requests if klass == "output" else 0
            out.append(row)
    return pd.DataFrame(out)


def test_backtest_reads_actuals_in_focus_shape(tmp_path):
    sc = load_scenario("support_chat")
    usage_csv = data_path("usage", "past_months_synthetic.csv")
    usage = pd.read_csv(usage_csv)
    ref = backtest(usage_csv, sc)
    focus_csv = tmp_path / "actuals.csv"
    _focus_actuals(usage, with_requests=True).to_csv(focus_csv, index=False)
    got = backtest(focus_csv, sc)
    cols = ["month", "forecast", "band_low", "band_high", "actual", "inside"]
    pd.testing.assert_frame_equal(got.table[cols], ref.table[cols])
    # Without request counts (FOCUS has none) the requests are estimated from the scenario: same actual cost.
    bare = tmp_path / "bare.parquet"
    _focus_actuals(usage, with_requests=False).to_parquet(bare)
    est = backtest(bare, sc)
    assert est.table["actual"].tolist() == pytest.approx(ref.table["actual"].tolist(), rel=1e-12)
    with pytest.raises(ConfigError, match="x_Forecast"):
        backtest(to_focus(focus_frame(forecast(sc, 1, paths=50, seed=1)), tmp_path / "fc.csv"), sc)


# The official validator (focus-validator 2.x, Python 3.12+) in its own venv: `make focus-validator` builds
# .venv-focus (tools/focus_validator_env.sh, part of `make test`); FOCUS_VALIDATOR may name another executable.
VALIDATOR = os.environ.get("FOCUS_VALIDATOR") or str(REPO / ".venv-focus" / "bin" / "focus-validator")
needs_validator = pytest.mark.skipif(
    not Path(VALIDATOR).is_file(),
    reason=f"focus-validator 2.x not installed ({VALIDATOR} is absent): it needs Python 3.12+, and "
    "`make focus-validator` found none on PATH or in pyenv's versions (or was not run)",
)
# Columns the validator's 1.2 rules cannot speak for: 1.3's own (held to by the tests above) and the commitment
# discount columns, whose rules apply only to providers that sell commitment discounts.
NOT_JUDGED_BY_12 = {"ServiceProviderName", "HostProviderName", "CommitmentDiscountId", "CommitmentDiscountStatus"}


def _official_validator(data: Path, tmp_path: Path) -> tuple[dict[str, str], dict]:
    """Runs focus-validator on `data` against the FOCUS 1.2 rules it ships, offline, declaring the applicability
    criteria a Kimi forecast meets; returns each rule's status (pass, fail, skip) and the rule model."""
    shebang = Path(VALIDATOR).read_text(errors="replace").splitlines()[0]
    python = shebang[2:].strip() if shebang.startswith("#!") else sys.executable
    where = "import focus_validator, os; print(os.path.dirname(focus_validator.__file__))"
    pkg = Path(subprocess.run([python, "-c", where], capture_output=True, text=True, check=True).stdout.strip())
    # 2.2.1 reads its ISO 4217 list through the relative path focus_validator/rules/currency_codes.csv, so it
    # runs from a directory holding a link to its package (its detailed log lands there too).
    cwd = tmp_path / "validator"
    cwd.mkdir(exist_ok=True)
    if not (cwd / "focus_validator").exists():
        (cwd / "focus_validator").symlink_to(pkg)
    report = tmp_path / f"{data.name}.xml"
    # --block-download keeps it on the rules it ships; the dead proxy turns any other request into an error.
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead, "NO_PROXY": "", "no_proxy": ""}
    cmd = [VALIDATOR, "--data-file", str(data), "--validate-version", "1.2", "--block-download",
           "--applicability-criteria", ",".join(VALIDATOR_CRITERIA),
           "--output-type", "unittest", "--output-destination", str(report)]  # fmt: skip
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0 and report.is_file(), res.stdout[-3000:] + res.stderr[-3000:]
    status = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {c.tag for c in case}
        rule = case.get("name").split(" :: ")[0]
        status[rule] = "fail" if kinds & {"failure", "error"} else "skip" if "skipped" in kinds else "pass"
    (model,) = (pkg / "rules").glob("model-1.2*.json")
    return status, json.loads(model.read_text())["ModelRules"]


def _failures(status: dict[str, str], rules: dict) -> list[str]:
    """Failed rules, leaving out a failed alternative of an OR that passed: InvoiceId-C-003-C holds when either
    C-004-C (null without an invoice) or C-005-C (not null with one) does, and the validator also reports the
    branch that does not apply as failed."""
    alternative_of: dict[str, list[str]] = {}
    for rid, r in rules.items():
        req = r.get("ValidationCriteria", {}).get("Requirement", {})
        if req.get("CheckFunction") == "OR":
            for item in req.get("Items", []):
                if item.get("CheckFunction") == "CheckModelRule":
                    alternative_of.setdefault(item["ModelRuleId"], []).append(rid)
    return sorted(
        r
        for r, s in status.items()
        if s == "fail" and not any(status.get(p) == "pass" for p in alternative_of.get(r, []))
    )


@needs_validator
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_official_validator_passes_the_export(rows, tmp_path, kind):
    status, rules = _official_validator(to_focus(rows, tmp_path / f"forecast.{kind}"), tmp_path)
    assert _failures(status, rules) == []
    # Every FOCUS column written is judged: some rule on it ran and passed (none failed, above).
    judged = {rules[r]["Reference"] for r, s in status.items() if s == "pass" and r in rules}
    assert set(FOCUS_COLUMNS) - NOT_JUDGED_BY_12 <= judged
    assert sum(s == "pass" for s in status.values()) >= 220  # 244 of 578 with 2.2.1; the rest do not apply


@needs_validator
def test_official_validator_catches_what_breaks_focus(rows, tmp_path):
    """The harness fails when the validator does: an export broken in four ways fails in those four."""
    bad = rows.drop(columns="InvoiceId")
    bad["BillingCurrency"] = bad["BillingCurrency"].where(bad.index != 1, "usd")  # not ISO 4217
    bad["ChargePeriodStart"] = bad["ChargePeriodStart"].where(bad.index != 2, "2026/11/01")  # not DateTimeFormat
    bad["PricingUnit"] = bad["PricingUnit"].where(bad.index != 3, "per 1M tokens!")  # not UnitFormat
    status, rules = _official_validator(to_focus(bad, tmp_path / "bad.csv"), tmp_path)
    failed = _failures(status, rules)
    assert "CostAndUsage-D-033-O" in failed  # InvoiceId RECOMMENDED be present
    assert {"BillingCurrency", "ChargePeriodStart", "PricingUnit"} <= {rules[r]["Reference"] for r in failed}
    # 2.2.1 misses some breaks (a ChargeCategory outside the allowed values, a Usage row without
    # ConsumedQuantity, ListCost other than ListUnitPrice x PricingQuantity, a negative EffectiveCost):
    # test_focus_rules_a_forecast_can_meet and test_prices_are_the_catalogs_list_prices check those themselves.
