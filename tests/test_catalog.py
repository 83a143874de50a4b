import datetime as dt
import json
from decimal import Decimal

import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.errors import CatalogError

D = dt.date


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_every_row_has_provenance(cat):
    for row in [*cat.cards, *cat.rate_tiers]:
        assert row.source and row.verified_on <= D(2026, 11, 29)  # section 8 of the facts was compiled 2026-11-29
        assert isinstance(row.official, bool)


def test_k26_prices_both_regions(cat):
    intl = cat.price("kimi-k2.6", on=D(2026, 11, 26))
    assert (intl.input_cache_hit, intl.input_cache_miss, intl.output) == (
        Decimal("0.16"),
        Decimal("0.95"),
        Decimal("4.00"),
    )
    assert intl.currency == "USD" and intl.context_window == 262144 and intl.default_max_completion_tokens == 32768
    assert intl.web_search_per_call == Decimal("0.004") and intl.batch_multiplier == Decimal("0.6")
    cn = cat.price("kimi-k2.6", region="cn", on=D(2026, 11, 26))
    assert (cn.input_cache_hit, cn.input_cache_miss, cn.output, cn.currency) == (
        Decimal("1.10"),
        Decimal("6.50"),
        Decimal("27.00"),
        "CNY",
    )
    assert cn.web_search_per_call == Decimal("0.03")


def test_k26_not_priced_before_release(cat):
    with pytest.raises(CatalogError, match="no price in force"):
        cat.price("kimi-k2.6", on=D(2026, 1, 1))


def test_retired_models_raise_after_retirement(cat):
    assert cat.price("kimi-k2-thinking", on=D(2026, 5, 24)).output == Decimal("2.50")
    with pytest.raises(CatalogError, match="retired on 2026-05-25"):
        cat.price("kimi-k2-thinking", on=D(2026, 5, 25))


def test_unknown_model_lists_known(cat):
    with pytest.raises(CatalogError) as e:
        cat.price("kimi-k2.6-turbo")
    assert "kimi-k2.6" in str(e.value) and "known models" in str(e.value)


def test_alias_lookup(cat):
    assert cat.price("moonshot-v1-8k-vision-preview", on=D(2026, 7, 1)).model == "moonshot-v1-8k"


def test_tier_tables_change_in_2026(cat):
    a = cat.tier("Tier3", on=D(2026, 8, 13))
    b = cat.tier("Tier3", on=D(2026, 9, 21))
    assert (a.version, a.concurrency, a.rpm, a.tpm) == ("A", 200, 5000, 3_000_000)
    assert (b.version, b.concurrency, b.rpm, b.tpm) == ("B", 50, 200, 3_000_000)
    # CN saw version B first (2026-09-03), the international site on 2026-09-12.
    assert cat.tier("Tier1", region="cn", on=D(2026, 9, 5)).concurrency == 15
    assert cat.tier("Tier1", region="intl", on=D(2026, 9, 5)).concurrency == 50
    t0 = cat.tier("Tier0", on=D(2026, 11, 26))
    assert (t0.concurrency, t0.rpm, t0.tpm, t0.tpd) == (1, 3, 500_000, 1_500_000)
    assert cat.tier("Tier5").tpd is None  # unlimited


def test_tier_ladder_sorted_by_recharge(cat):
    names = [t.name for t in cat.tiers(on=D(2026, 11, 26))]
    assert names == [f"Tier{i}" for i in range(6)]
    assert [t.recharge for t in cat.tiers(region="cn", on=D(2026, 11, 26))][-1] == Decimal(20000)


def test_other_providers(cat):
    assert cat.tier("workers-ai-default", provider="cloudflare").rpm == 300
    cf = cat.price("@cf/moonshotai/kimi-k2.6", provider="cloudflare")
    assert cf.free_neurons_per_day == 10000 and cf.neurons_output_per_m == 363636
    assert cat.price("moonshotai/kimi-k2.6", provider="openrouter").official is False
    with pytest.raises(CatalogError, match="unknown tier 'Tier9'"):
        cat.tier("Tier9")


def test_user_override_and_new_rows(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(
        """
[[card]]
provider = "moonshot"
region = "intl"
model = "kimi-k2.6"
currency = "USD"
input_cache_hit = 0.10
input_cache_miss = 0.80
output = 3.50
context_window = 262144
default_max_completion_tokens = 32768
effective_from = 2026-04-20
verified_on = 2026-11-01
official = false
source = "our negotiated contract"

[[tier]]
provider = "moonshot"
region = "intl"
name = "Enterprise"
concurrency = 2000
rpm = 20000
tpm = 20000000
verified_on = 2026-11-01
official = false
source = "contract"
"""
    )
    cat = load_catalog([f])
    assert cat.price("kimi-k2.6").output == Decimal("3.50")
    assert cat.tier("Enterprise").concurrency == 2000


def test_bad_user_file_names_field(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(
        '[[card]]\nprovider="x"\nmodel="m"\ncurrency="USD"\ninput_cache_miss=-1\noutput=1\ncontext_window=10\n'
        'verified_on=2026-01-01\nofficial=false\nsource="s"\n'
    )
    with pytest.raises(CatalogError, match="input_cache_miss"):
        load_catalog([f])


def test_import_litellm(tmp_path):
    f = tmp_path / "model_prices_and_context_window.json"
    f.write_text(
        json.dumps(
            {
                "sample_spec": {"input_cost_per_token": 0},
                "moonshot/kimi-k2.5": {
                    "litellm_provider": "moonshot",
                    "input_cost_per_token": 6e-07,
                    "output_cost_per_token": 3e-06,
                    "cache_read_input_token_cost": 1e-07,
                    "max_input_tokens": 262144,
                    "mode": "chat",
                },
            }
        )
    )
    cat = load_catalog([f])
    card = cat.price("moonshot/kimi-k2.5", provider="moonshot", region="global")
    assert (card.input_cache_miss, card.output, card.cache_hit_price) == (Decimal("0.6"), Decimal("3"), Decimal("0.1"))


def test_frames(cat):
    p = cat.prices_frame()
    assert {"source", "verified_on", "effective_from", "effective_to", "official"} <= set(p.columns)
    assert len(cat.tiers_frame(on=D(2026, 11, 26)).query("provider == 'moonshot'")) == 12
