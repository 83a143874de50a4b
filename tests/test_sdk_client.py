"""The simulated `openai-sdk` client against the real OpenAI SDK (sync, default retries) driving the emulator.

A fixed burst of requests is sent at once by threads through `openai.OpenAI` with its default retry policy;
the emulator counts the attempts that reached it and the threads count the `RateLimitError`s the application
sees. The simulator's `openai-sdk` client is run on the same burst and limits and must give the same two
numbers. Concurrency limits with a fixed 0.9 s latency make the SDK's schedule matter: the first retry
(0.375-0.5 s) finds the slots still busy, the second (1.125-1.5 s after the start) finds them free. The
server's retry hint is read from the emulator's own 429s (a Retry-After header or none), so the simulated
client is told what the emulator on this branch does.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import openai
import pytest

from kimiplan.capacity.sim.simulate import ClientPolicy, SimSettings, simulate_arrays
from kimiplan.emulator import EmulatorConfig, LimitsTruth, emulator
from kimiplan.emulator import config as emulator_config
from kimiplan.emulator.config import LatencyTruth, LogNormalTruth, ProtocolTruth, RouteTruth
from kimiplan.model.settings import SDK_INITIAL_RETRY_DELAY_S, SDK_MAX_RETRIES, sdk_backoff_s

LATENCY_S = 0.9
MSG = [{"role": "user", "content": "hi"}]
KEY = emulator_config.TEST_API_KEY


def test_sdk_constants_are_the_installed_sdks():
    from openai import _constants

    assert SDK_MAX_RETRIES == _constants.DEFAULT_MAX_RETRIES
    assert SDK_INITIAL_RETRY_DELAY_S == _constants.INITIAL_RETRY_DELAY
    # the schedule itself, against the SDK's own function (its jitter drawn from `random.random`)
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key=KEY)
    opts = openai._models.FinalRequestOptions(method="post", url="/x", max_retries=6)

    for retry in range(6):
        random.seed(retry)
        u = random.random()
        random.seed(retry)
        got = client._calculate_retry_timeout(6 - retry, opts, None)
        assert got == pytest.approx(sdk_backoff_s(retry, u), rel=1e-12)


def _burst_through_sdk(
    n: int, limits: LimitsTruth, latency_s: float = LATENCY_S, header: bool = False
) -> tuple[int, int, set]:
    """(attempts the emulator saw, RateLimitErrors raised, Retry-After values on its 429s). `header`: the
    emulator puts a Retry-After on its rate-limit 429s (Kimi does not; a config switch of the emulator)."""
    extra = {"protocol": ProtocolTruth(rate_limit_retry_after_header=True)} if header else {}
    cfg = EmulatorConfig(
        time_scale=1.0,
        limits=limits,
        **extra,
        routes={"default": RouteTruth(output=LogNormalTruth(median=1, p95=1))},
        latency=LatencyTruth(
            ttft=LogNormalTruth(median=latency_s, p95=latency_s), prefill_tokens_per_s=1e9, decode_tokens_per_s=1e9
        ),
    )
    hints: set = set()

    def hook(response):
        if response.status_code == 429:
            hints.add(response.headers.get("retry-after-ms") or response.headers.get("retry-after"))

    failed = []
    with emulator(cfg) as em:
        http = openai.DefaultHttpxClient(trust_env=False, event_hooks={"response": [hook]})
        client = openai.OpenAI(base_url=em.base_url, api_key=KEY, http_client=http)  # default max_retries
        gate = threading.Barrier(n)

        def one():
            gate.wait()
            try:
                client.chat.completions.create(model="kimi-k2.6", messages=MSG, max_completion_tokens=1)
            except openai.RateLimitError:
                failed.append(1)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        attempts = em.engine.stats.requests
        http.close()
    return attempts, len(failed), hints


@pytest.mark.parametrize(
    ("n", "limits", "header"),
    [
        (8, LimitsTruth(concurrency=2), False),
        (8, LimitsTruth(concurrency=3), False),
        (8, LimitsTruth(concurrency=5), False),
        (6, LimitsTruth(rpm=4), False),
        (8, LimitsTruth(concurrency=2), True),
        (8, LimitsTruth(concurrency=3), True),
    ],
    ids=["conc2", "conc3", "conc5", "rpm4", "conc2-retry-after", "conc3-retry-after"],
)
def test_simulated_sdk_client_matches_the_real_sdk(n, limits, header):
    # With a Retry-After of 1 s the SDK waits exactly that: a 0.6 s latency has ended by then.
    latency = 0.6 if header else LATENCY_S
    attempts, failures, hints = _burst_through_sdk(n, limits, latency, header)
    hints.discard(None)
    assert bool(hints) == header  # the emulator on this branch: no Retry-After on a rate-limit 429 unless asked
    hint = "seconds" if hints else "none"
    lim = {"concurrency": None, "rpm": None, "tpm": None, "tpd": None, "rpd": None}
    lim.update({k: float(v) for k, v in limits.model_dump().items() if v is not None})
    sims = []
    for seed in range(3):  # the SDK's jitter cannot change these outcomes; three seeds show it does not
        st = SimSettings(seed=seed, hours=1, client=ClientPolicy(kind="openai-sdk", retry_after=hint))
        s = simulate_arrays(np.zeros(n), 10.0, latency + 0.01, lim, 3600.0, settings=st).summary
        sims.append((s.attempts, round(s.failed_fraction * n)))
    assert len(set(sims)) == 1
    assert (attempts, failures) == sims[0], f"real SDK {attempts} attempts, {failures} failures; simulated {sims[0]}"
    assert failures > 0 or limits.concurrency in (3, 5)  # the grid has both outcomes


def test_plan_and_report_state_what_the_application_sees_with_the_sdk(support, catalog):
    from kimiplan.capacity.plan import plan, sdk_client_effect
    from kimiplan.report.capacity import capacity_report_sections

    tight = support.with_changes(tier="Tier2")
    sim = tight.simulation.model_copy(update={"client": ClientPolicy(kind="openai-sdk")})
    p = plan(tight.model_copy(update={"simulation": sim}), catalog)
    ce = p.client_effect
    assert ce["client"] == "openai-sdk" and ce["max_retries"] == SDK_MAX_RETRIES
    # the SDK's retries within 1.5 s recover little from a full 60 s window: most refused requests still fail
    assert 0.5 * p.refusal_total < ce["failed"] < p.refusal_total < ce["attempt_refusal"]
    assert 1 < ce["attempts_per_request"] <= 1 + SDK_MAX_RETRIES
    assert "With the OpenAI SDK's default retries" in p.describe() and "RateLimitError" in p.describe()
    # the plan's figure is the simulator's own at the busiest minute's rate, whatever client the scenario names
    assert sdk_client_effect(tight, catalog) == ce
    summary = dict(capacity_report_sections(tight, catalog))["Capacity summary"]
    worst = max(ce["failed_by_route"], key=ce["failed_by_route"].get)
    assert "With the OpenAI SDK&#x27;s default retries" in summary and f"Route {worst} fails most" in summary


def test_simulated_sdk_obeys_the_servers_retry_after():
    # A burst of 10 against RPM 3 with a Retry-After: each retry comes back when the window has emptied (60 s
    # later), 3 get in each time, and after the SDK's two retries 1 request raises RateLimitError.
    lim = {"concurrency": None, "rpm": 3.0, "tpm": None, "tpd": None, "rpd": None}
    st = SimSettings(hours=1, client=ClientPolicy(kind="openai-sdk", retry_after="seconds"))
    s = simulate_arrays(np.zeros(10), 10.0, 1.0, lim, 3600.0, settings=st).summary
    assert (s.attempts, round(s.failed_fraction * 10)) == (10 + 7 + 4, 1)
    assert s.wait_s["p99"] == pytest.approx(120.0, rel=0.02)  # the last ones admitted waited two windows
    # without the header the retries come within 1.5 s, find the window full, and 7 fail
    st = SimSettings(hours=1, client=ClientPolicy(kind="openai-sdk"))
    s = simulate_arrays(np.zeros(10), 10.0, 1.0, lim, 3600.0, settings=st).summary
    assert (s.attempts, round(s.failed_fraction * 10)) == (10 + 7 + 7, 7) and s.wait_s["p99"] == 0.0
