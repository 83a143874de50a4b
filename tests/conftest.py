"""Shared fixtures. Emulator fixtures: a Kimi-compatible emulator on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import pytest

from kimiplan.catalog.cards import load_catalog
from kimiplan.catalog.resolve import load_scenario
from kimiplan.client import KimiClient, KimiConfig, RetryPolicy
from kimiplan.emulator import EmulatorConfig, emulator
from kimiplan.emulator.config import TEST_API_KEY
from kimiplan.model.scenario import example_path


@pytest.fixture(scope="session")
def catalog():
    """The shipped catalog (read-only: tests that change it load their own)."""
    return load_catalog()


@pytest.fixture(scope="session")
def support(catalog):
    """The bundled support_chat example (scenarios are frozen models, safe to share)."""
    return load_scenario(example_path("support_chat"), catalog)


@pytest.fixture
def make_emulator():
    """Factory: `with make_emulator(**config_fields) as em:`; fast (no sleeping) unless time_scale is given."""

    def factory(**fields):
        fields.setdefault("time_scale", 0.0)
        fields.setdefault("stream_chunk_tokens", 128)
        return emulator(EmulatorConfig(**fields))

    return factory


@pytest.fixture
def emulated():
    """A running emulator with default ground truth."""
    with emulator(EmulatorConfig(time_scale=0.0, stream_chunk_tokens=128)) as em:
        yield em


@pytest.fixture
def make_client():
    """Factory for a KimiClient on an emulator; waits are scaled down 1000x and recorded in client.sleeps."""

    def factory(em, **fields):
        retry = fields.pop("retry", RetryPolicy(time_scale=0.001, base_delay_s=1.0))
        sleeps: list[float] = []
        cfg = KimiConfig(model=em.config.models[0], base_url=em.base_url, api_key=TEST_API_KEY, retry=retry, **fields)
        client = KimiClient(cfg, sleep=lambda s: (sleeps.append(s), __import__("time").sleep(s)), seed=0)
        client.sleeps = sleeps
        return client

    return factory
