"""K3 family, Fireworks and dated tool prices in the catalog; cache writes priced exactly (hand calculations)."""

import datetime as dt
import json
from decimal import Decimal

import pytest

from kimiplan.catalog.cards import PriceCard, load_catalog
from kimiplan.cli import main
from kimiplan.errors import CatalogError, ConfigError
from kimiplan.finance.cost import Usage, cost_of_records, cost_of_usage

D = dt.date


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.mark.parametrize(
    "model, hit, miss, out, w5, w1",
    [
        ("kimi-k3", "0.30", "3.00", "15.00", "3.00", "6.00"),
        ("kimi-k3.1-pro", "0.20", "2.00", "10.00", "2.00", "4.00"),
        ("kimi-k3.1-pro-highspeed", "0.20", "4.00", "20.00", "4.00", "8.00"),
    ],
)
def test_k3_family_rows(cat, model, hit, miss, out, w5, w1):
    c = cat.price(model, on=D(2026, 11, 29))
    assert (c.input_cache_hit, c.input_cache_miss, c.output) == (Decimal(hit), Decimal(miss), Decimal(out))
    assert c.paid_cache_writes and (c.cache_write_price("5m"), c.cache_write_price("1h")) == (Decimal(w5), Decimal(w1))
    # The 1-hour write costs 2x the input price and the 5-minute write 1x (the third-party rule the rows follow).
    assert c.cache_write_price("5m") == c.input_cache_miss and c.cache_write_price("1h") == 2 * c.input_cache_miss
    assert c.official is False and c.source and c.cache_write_source and c.verified_on <= D(2026, 11, 29)
    assert c.reasoning == "always" and c.prices_exclude_tax is True and c.batch_multiplier is None
    assert c.context_window == 1_048_576


def test_k3_release_dates_and_effort(cat):
    with pytest.raises(CatalogError, match="no price in force"):
        cat.price("kimi-k3", on=D(2026, 7, 15))
    assert cat.price("kimi-k3", on=D(2026, 7, 16)).reasoning_effort == ("max",)
    with pytest.raises(CatalogError, match="no price in force"):
        cat.price("kimi-k3.1-pro", on=D(2026, 10, 22))
    k26 = cat.price("kimi-k2.6", on=D(2026, 11, 29))
    assert k26.reasoning_effort is None and k26.reasoning == "optional" and not k26.paid_cache_writes
    assert cat.price("kimi-k3", on=D(2026, 11, 29)).default_max_completion_tokens == 131072


def test_fireworks_rows(cat):
    fw = cat.price("Kimi K2.6", "fireworks", on=D(2026, 11, 29))
    assert (fw.input_cache_hit, fw.input_cache_miss, fw.output, fw.batch_multiplier) == (
        Decimal("0.16"),
        Decimal("0.95"),
        Decimal("4.00"),
        Decimal("0.5"),
    )
    turbo = cat.price("Kimi K2.6 Turbo", "fireworks", on=D(2026, 11, 29))
    assert (turbo.input_cache_hit, turbo.input_cache_miss, turbo.output) == (
        Decimal("0.30"),
        Decimal("2.00"),
        Decimal("8.00"),
    )
    assert fw.official and "fireworks" in fw.source


def test_batch_takes_k26_and_k25(cat):
    for m in ("kimi-k2.6", "kimi-k2.5"):
        c = cat.price(m, on=D(2026, 8, 1))
        assert c.batch_multiplier == Decimal("0.6") and "kimi-k2.5" in c.batch_source


def test_web_search_price_is_dated(cat):
    before = cat.price("kimi-k2.6", on=D(2026, 11, 28))
    after = cat.price("kimi-k2.6", on=D(2026, 11, 29))
    assert before.web_search_per_call == Decimal("0.004") and "Help Center" in before.web_search_source
    assert after.web_search_per_call == Decimal("0.005") and "pricing/tools" in after.web_search_source
    assert cat.price("kimi-k2.6", region="cn", on=D(2026, 11, 29)).web_search_per_call == Decimal("0.03")
    both = cat.tool_prices_frame()
    intl = both[(both.provider == "moonshot") & (both.region == "intl")]
    assert sorted(intl.price_per_call) == [0.004, 0.005] and intl.official.all()
    # A card that states its own per-call price keeps it.
    own = PriceCard(
        provider="moonshot",
        region="intl",
        model="my-model",
        currency="USD",
        input_cache_miss=1,
        output=1,
        web_search_per_call=0.01,
        context_window=1000,
        source="test",
        official=False,
        verified_on=D(2026, 11, 1),
    )
    assert cat.with_rows([own]).price("my-model", on=D(2026, 11, 29)).web_search_per_call == Decimal("0.01")


def test_cost_with_cache_writes_by_hand(cat):
    k31 = cat.price("kimi-k3.1-pro", on=D(2026, 11, 29))
    u = Usage(prompt_tokens=120_000, completion_tokens=3_000, cached_tokens=80_000, cache_write_tokens=30_000)
    # By hand, USD: read 80,000 x 0.20/1M = 0.016; write 30,000 x 2.00/1M = 0.06; the rest 10,000 x 2.00/1M = 0.02;
    # output 3,000 x 10.00/1M = 0.03.
    c5 = cost_of_usage(u, k31)
    assert (c5.cache_hit_input, c5.cache_write_input, c5.cache_miss_input, c5.output) == (
        Decimal("0.016"),
        Decimal("0.06"),
        Decimal("0.02"),
        Decimal("0.03"),
    )
    assert c5.total == Decimal("0.126")
    c1 = cost_of_usage(u, k31, cache_retention="1h")  # the write at 4.00/1M: 0.12
    assert c1.cache_write_input == Decimal("0.12") and c1.total == Decimal("0.186")
    assert c1.to_dict()["by_price_class"]["input_cache_write"] == 0.12 and c1.to_dict()["cache_retention"] == "1h"
    # K2.6 bills no write: the same written tokens are ordinary input at the cache-miss price.
    k26 = cat.price("kimi-k2.6", on=D(2026, 11, 29))
    k = cost_of_usage(u, k26)
    assert (
        k.cache_write_input == Decimal("0.0285")
        and k.total == cost_of_usage(Usage(120_000, 3_000, cached_tokens=80_000), k26).total
    )
    with pytest.raises(ConfigError, match="retention"):
        cost_of_usage(u, k31, cache_retention="1d")


def test_cache_write_sums_are_exact(cat):
    k3 = cat.price("kimi-k3", on=D(2026, 11, 29))
    many = [Usage(1_001, 7, cached_tokens=300, cache_write_tokens=333) for _ in range(1000)]
    total = cost_of_records(many, k3, cache_retention="1h").total
    # 1000 x (300 x 0.30 + 333 x 6.00 + 368 x 3.00 + 7 x 15.00) / 1M
    assert total == Decimal(1000) * (300 * Decimal("0.30") + 333 * 6 + 368 * 3 + 7 * 15) / Decimal(1_000_000)


def test_usage_write_bounds_and_response():
    with pytest.raises(ConfigError, match="cache_write_tokens"):
        Usage(100, 1, cached_tokens=60, cache_write_tokens=50)
    with pytest.raises(ConfigError, match="cache_write_tokens"):
        Usage(100, 1, cache_write_tokens=-1)
    r = {
        "usage": {
            "prompt_tokens": 500,
            "completion_tokens": 9,
            "cached_tokens": 100,
            "cache_creation_input_tokens": 300,
        }
    }
    u = Usage.from_response(r)
    assert (u.cached_tokens, u.cache_write_tokens, u.cache_miss_tokens) == (100, 300, 100)


def test_prices_json_lists_new_models_with_write_prices(capsys):
    assert main(["prices", "--on", "2026-11-29", "--json"]) == 0
    rows = {(r["provider"], r["model"]): r for r in json.loads(capsys.readouterr().out)}
    for model, w5, w1 in (("kimi-k3", 3.0, 6.0), ("kimi-k3.1-pro", 2.0, 4.0), ("kimi-k3.1-pro-highspeed", 4.0, 8.0)):
        r = rows[("moonshot", model)]
        assert (r["input_cache_write_5m"], r["input_cache_write_1h"]) == (w5, w1)
        assert r["official"] is False and r["verified_on"] and r["source"] and r["cache_write_source"]
        assert r["prices_exclude_tax"] is True and r["web_search_per_call"] == 0.005
    assert rows[("moonshot", "kimi-k2.6")]["input_cache_write_5m"] is None
    assert ("fireworks", "Kimi K2.6 Turbo") in rows


def test_cost_cli_cache_write(capsys):
    argv = ["cost", "--model", "kimi-k3.1-pro", "--prompt-tokens", "1000000", "--cache-write-tokens", "1000000"]
    assert main([*argv, "--completion-tokens", "0", "--on", "2026-11-29", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 2.0
    assert main([*argv, "--completion-tokens", "0", "--cache-retention", "1h", "--on", "2026-11-29", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 4.0


# --- the catalog current to December 2026 (issue 22) -------------------------------------------------------------
@pytest.mark.parametrize(
    "provider, model, hit, miss, out",
    [
        ("moonshot", "kimi-k2.7-code", "0.19", "0.95", "4.00"),
        ("moonshot", "kimi-k2.7-code-highspeed", "0.38", "1.90", "8.00"),
        ("openrouter", "moonshotai/kimi-k2.7-code", "0.19", "0.95", "4.00"),
    ],
)
def test_k27_code_rows(cat, provider, model, hit, miss, out):
    c = cat.price(model, provider, on=D(2026, 12, 3))
    assert (c.input_cache_hit, c.input_cache_miss, c.output) == (Decimal(hit), Decimal(miss), Decimal(out))
    assert c.context_window == 262_144 and c.reasoning == "always" and not c.paid_cache_writes
    assert c.official is False and "PR #" in c.source and c.effective_from is not None and c.verified_on
    # Moonshot's Batch API takes only K2.6 and K2.5: no batch price is invented for K2.7 Code.
    assert c.batch_multiplier is None


def test_k27_highspeed_is_twice_the_standard_rates(cat):
    std, fast = (cat.price(m, on=D(2026, 12, 3)) for m in ("kimi-k2.7-code", "kimi-k2.7-code-highspeed"))
    assert (fast.input_cache_hit, fast.input_cache_miss, fast.output) == tuple(
        2 * v for v in (std.input_cache_hit, std.input_cache_miss, std.output)
    )
    with pytest.raises(CatalogError, match="no price in force"):
        cat.price("kimi-k2.7-code", on=D(2026, 6, 11))


def test_k3_max_output_on_moonshot_against_host_caps(cat):
    k3 = cat.price("kimi-k3", on=D(2026, 12, 3))
    assert k3.max_output_tokens == 1_048_576 and k3.default_max_completion_tokens == 131_072
    assert "1048576" in k3.max_output_source and "131,072" in k3.max_output_source
    assert "official OpenAPI" in k3.max_output_source


def test_reasoning_effort_values_by_model_and_date(cat):
    on = D(2026, 12, 3)
    assert cat.price("kimi-k3", on=D(2026, 7, 16)).reasoning_effort == ("max",)
    assert cat.price("kimi-k3", on=on).reasoning_effort == ("low", "high", "max")
    # The two K3 cards differ only in what reasoning_effort accepts: prices are the same on both days.
    a, b = cat.price("kimi-k3", on=D(2026, 7, 16)), cat.price("kimi-k3", on=on)
    assert (a.input_cache_hit, a.input_cache_miss, a.output, a.input_cache_write_1h) == (
        b.input_cache_hit,
        b.input_cache_miss,
        b.output,
        b.input_cache_write_1h,
    )
    assert cat.price("kimi-k3.1-pro", on=on).reasoning_effort == ()  # accepted, values not documented
    assert cat.price("kimi-k2.6", on=on).reasoning_effort is None  # K2.6 rejects it
    assert cat.price("@cf/moonshotai/kimi-k2.6", "cloudflare", on=on).reasoning_effort == ("low", "medium", "high")
    for c in cat.cards:
        if c.reasoning_effort is not None or (c.provider, c.region, c.model) == ("moonshot", "intl", "kimi-k2.6"):
            assert c.reasoning_effort_source, c.model


def test_route_budget_above_max_output_is_an_error(cat):
    from types import SimpleNamespace

    from kimiplan.catalog.resolve import max_completion
    from kimiplan.errors import ScenarioError

    card = cat.price("kimi-k3", on=D(2026, 12, 1))
    big = SimpleNamespace(name="big", max_completion_tokens=2_000_000)
    with pytest.raises(ScenarioError, match="2,000,000 is above the 1,048,576"):
        max_completion(None, big, card)
    assert max_completion(None, SimpleNamespace(name="ok", max_completion_tokens=1_048_576), card) == 1_048_576
    assert max_completion(None, SimpleNamespace(name="default", max_completion_tokens=None), card) == 131_072


def test_prices_json_carries_notes_and_reported_retirement(capsys):
    assert main(["prices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["provider"], r["region"], r["model"], r["effective_from"]): r for r in rows}
    k25 = next(r for (p, reg, m, _), r in by.items() if (p, reg, m) == ("moonshot", "intl", "kimi-k2.5"))
    assert k25["retired_on"] is None and k25["reported_retired_on"] == "2026-08-31"
    assert "not confirmed officially" in k25["notes"].lower() or "Not confirmed officially" in k25["notes"]
    k27 = next(r for (p, reg, m, _), r in by.items() if m == "kimi-k2.7-code" and p == "moonshot")
    assert k27["notes"] and k27["source"] and k27["official"] is False and k27["verified_on"] == "2026-08-27"
    k3 = [r for (p, reg, m, _), r in by.items() if m == "kimi-k3"]
    assert {r["max_output_tokens"] for r in k3} == {1_048_576} and all(r["max_output_source"] for r in k3)
    for r in rows:  # every row names its source and date
        assert r["source"] and r["verified_on"] and isinstance(r["official"], bool), r["model"]
