"""Cache writes are priced at the retention the mapping says (logs and spans do not record it): the 5-minute
write price by default, the 1-hour one when the mapping says `cache_write_retention: 1h`."""

import datetime as dt
from decimal import Decimal

import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.errors import ConfigError
from kimiplan.logs import summarize_log
from kimiplan.logs.mapping import load_mapping

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.json.file")

from otel_spans import T0_NS, Call, write_otlp  # noqa: E402

CALLS = [
    Call("answer", T0_NS + i * 10**9, 10**9, 5000 + 100 * i, 1000, 300, writes=2000 + 10 * i, model="kimi-k3")
    for i in range(12)
]


def _mapping(**over):
    m = load_mapping("otel-genai").model_dump(mode="json")
    m["columns"] = {k: [s["column"] for s in v] for k, v in m["columns"].items()}
    return {**m, **over}


def test_cache_writes_at_the_retention_the_mapping_says(tmp_path):
    path = write_otlp(tmp_path / "k3.jsonl", CALLS, noise=False)
    card = load_catalog().price("kimi-k3", on=dt.date(2026, 12, 1))
    writes = sum(c.writes for c in CALLS)
    by_default = summarize_log(path)
    assert load_mapping("otel-genai").cache_write_retention == "5m"
    assert by_default.table["cache_write_tokens"].sum() == writes
    five = Decimal(writes) * card.cache_write_price("5m") / 1_000_000
    one_hour = Decimal(writes) * card.cache_write_price("1h") / 1_000_000
    assert card.cache_write_price("1h") == 2 * card.cache_write_price("5m")  # the K3 family's write prices
    assert Decimal(str(by_default.table["cost_cache_write"].sum())) == five
    hour = summarize_log(path, _mapping(cache_write_retention="1h"))
    assert Decimal(str(hour.table["cost_cache_write"].sum())) == one_hour
    assert hour.cost - by_default.cost == one_hour - five  # nothing else changes
    with pytest.raises((ConfigError, ValueError)):
        summarize_log(path, _mapping(cache_write_retention="10m"))
