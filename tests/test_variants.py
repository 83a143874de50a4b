"""Variants: model IDs from the explicit table checked against the catalog, side-by-side totals, and the
waterfall drivers that must add up to the difference."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from kimiplan.catalog.resolve import load_scenario
from kimiplan.errors import CatalogError, ConfigError
from kimiplan.finance.forecast import forecast
from kimiplan.finance.variants import (
    EQUIVALENT_MODELS,
    batch_variant,
    cache_variant,
    compare,
    compare_monthly,
    equivalent_model,
    provider_variant,
    run_variants,
    standard_variants,
    thinking_variant,
    waterfall,
)
from kimiplan.model.scenario import example_path


@pytest.fixture(scope="module")
def coding(catalog):
    return load_scenario(example_path("coding_assistant"), catalog)


def test_every_mapped_id_is_priced(catalog):
    for per_provider in EQUIVALENT_MODELS.values():
        for provider, model in per_provider.items():
            card = catalog.price(model, provider, None, dt.date(2026, 6, 1))
            assert card.model == model
    assert equivalent_model("kimi-k2.6", "siliconflow", catalog) == "moonshotai/Kimi-K2.6"
    assert equivalent_model("@cf/moonshotai/kimi-k2.6", "openrouter", catalog) == "moonshotai/kimi-k2.6"
    with pytest.raises(CatalogError, match="no known ID"):
        equivalent_model("kimi-k2.5", "cloudflare", catalog)
    with pytest.raises(CatalogError, match="no equivalents"):
        equivalent_model("gpt-5", "moonshot", catalog)


def test_provider_variant_fills_missing_budget(coding, catalog):
    cf = provider_variant(coding, "cloudflare", catalog)
    assert cf.model == "@cf/moonshotai/kimi-k2.6" and cf.tier is None
    # explain_default_budget omits max_completion_tokens; Cloudflare documents no default, so K2.6's 32,768 is used.
    assert cf.route("explain_default_budget").max_completion_tokens == 32768
    assert "assumed" in cf.description


def test_waterfall_adds_up_and_names_the_driver(coding, catalog):
    fcs = run_variants(
        {
            "base": coding,
            "no thinking": thinking_variant(coding, False),
            "batch": batch_variant(coding),
            "cache": cache_variant(coding, 0.5),
        },
        3,
        catalog=catalog,
        paths=50,
    )
    base_total = fcs["base"].monthly["expected"].sum()
    for name in ("no thinking", "batch", "cache"):
        wf = waterfall(fcs["base"], fcs[name]).set_index("step")["amount"]
        drivers = wf.drop(["base", "other"])
        assert drivers.sum() == pytest.approx(wf["other"] - wf["base"], rel=1e-9, abs=1e-6)
        assert wf["base"] == pytest.approx(base_total)
    no_think = waterfall(fcs["base"], fcs["no thinking"]).set_index("step")["amount"]
    assert no_think["reasoning tokens"] < 0 and no_think["price (model, provider, batch, tax)"] == pytest.approx(
        0, abs=1e-6
    )
    # Batch: every token price x 0.6; tool calls (none here) keep their price.
    batch = waterfall(fcs["base"], fcs["batch"]).set_index("step")["amount"]
    assert batch["price (model, provider, batch, tax)"] == pytest.approx(-0.4 * base_total, rel=1e-9)
    cache = waterfall(fcs["base"], fcs["cache"]).set_index("step")["amount"]
    assert cache["cache hits"] > 0 and cache["volume"] == 0


def test_compare_side_by_side(catalog):
    sc = load_scenario(example_path("support_chat"), catalog)
    variants = standard_variants(sc, catalog)
    assert {"base", "kimi-k2.5", "cloudflare", "openrouter", "siliconflow", "Batch API (all routes)"} <= set(variants)
    fcs = run_variants(variants, 2, catalog=catalog, paths=100)
    table = compare(fcs).set_index("variant")
    assert table.loc["base", "vs_first"] == 0
    assert table.loc["kimi-k2.5", "status"] == "reported retired, unconfirmed"
    # Cloudflare's free 10,000 neurons/day at 0.011 USD per 1,000 = 0.11 USD a day, far below the daily usage.
    assert table.loc["cloudflare", "free_allowance"] == pytest.approx(0.11 * 61)
    assert "Moonshot-only" in table.loc["cloudflare", "notes"]
    # Neurons: cost at 0.011 USD per 1,000 neurons matches Cloudflare's USD token prices (its own conversion).
    cf = fcs["cloudflare"]
    neuron_cost = cf.neurons_per_day * 61 * 0.011 / 1000 - 0.11 * 61
    assert table.loc["cloudflare", "expected_total"] == pytest.approx(neuron_cost + _tools_cost(cf), rel=1e-4)
    assert table.loc["base", "neurons_per_day"] == 0
    monthly = compare_monthly(fcs)
    assert len(monthly) == 2 * len(variants)
    assert np.isclose(
        monthly.groupby("variant", sort=False)["expected"].sum().to_numpy(), table["expected_total"].to_numpy()
    ).all()


def _tools_cost(fc):
    return float(fc.expected.loc[fc.expected["price_class"] == "tool_calls", "cost"].sum())


def test_cny_variant_converts(catalog):
    sc = load_scenario(example_path("support_chat"), catalog)  # USD base with exchange_rate CNY 7.1
    cn = sc.with_changes(region="cn", tier=None)
    fcs = run_variants({"intl": sc, "cn": cn}, 1, catalog=catalog, paths=20)
    direct = forecast(cn, 1, catalog=catalog, paths=20)  # CNY
    assert fcs["cn"].currency == "USD"
    assert fcs["cn"].monthly["expected"].iloc[0] == pytest.approx(direct.monthly["expected"].iloc[0] / 7.1)
    with pytest.raises(ConfigError, match="hit_rate"):
        cache_variant(sc, 1.5)
    with pytest.raises(ConfigError, match="batch routes"):
        batch_variant(sc, ["nope"])


def test_compare_cli_standard_variants_and_drivers(capsys):
    import json

    from kimiplan.cli import main

    assert (
        main(
            [
                "compare",
                "support_chat",
                "--months",
                "2",
                "--paths",
                "200",
                "--drivers",
                "Batch API (all routes)",
                "--json",
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    names = [v["variant"] for v in d["variants"]]
    assert names[0] == "base" and "Batch API (all routes)" in names and "openrouter" in names
    steps = {s["step"]: s["amount"] for s in d["drivers"]}
    base = next(v for v in d["variants"] if v["variant"] == "base")["expected_total"]
    batch = next(v for v in d["variants"] if v["variant"] == "Batch API (all routes)")["expected_total"]
    # Only the price changes under the Batch API, and the drivers add up to the difference.
    assert steps["price (model, provider, batch, tax)"] == pytest.approx(batch - base)
    assert sum(v for k, v in steps.items() if k not in ("base", "other")) == pytest.approx(batch - base)
    assert main(["compare", "support_chat", "--drivers", "nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err


def test_compare_cli_with_other_scenarios(capsys):
    from kimiplan.cli import main

    assert main(["compare", "support_chat", "coding_assistant", "--months", "1", "--paths", "100"]) == 0
    out = capsys.readouterr().out
    assert "coding-assistant" in out and "base" in out
