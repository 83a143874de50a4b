"""The emulator counts RPM/TPM/TPD windows exactly like the simulator (admission.WindowSettings).

The engine is driven directly with an injected clock (emulated epoch seconds; 0 = 1970-01-01 00:00 UTC), so
these tests never sleep and never open a socket.
"""

import numpy as np
import pytest

from kimiplan.catalog.admission import LIMITS, AccountState
from kimiplan.emulator import EmulatorConfig, Engine, LimitsTruth, load_emulator_config
from kimiplan.emulator.engine import EmulatorRefusal
from kimiplan.errors import ConfigError
from kimiplan.model.settings import WindowSettings
from kimiplan.tokens.tokenizer import count_messages

MSG = [{"role": "user", "content": "hi"}]
P = count_messages(MSG)  # prompt tokens of MSG; a request reserves P + max_completion_tokens
HOUR = 3600.0
PREFIX = "Your account org-emulated<ak-emulated> request reached organization "


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_engine(clock: Clock, **fields) -> Engine:
    return Engine(EmulatorConfig(time_scale=0.0, **fields), clock=clock)


def offer(engine: Engine, reserved: int = P + 1) -> str:
    """'ok' when admitted (and released at once), else the 429 message."""
    try:
        engine.chat({"model": "kimi-k2.6", "messages": MSG, "max_completion_tokens": reserved - P}, {})
    except EmulatorRefusal as exc:
        assert exc.status == 429
        return exc.message
    engine.release()
    return "ok"


def test_default_window_is_the_simulators():
    assert EmulatorConfig().window == WindowSettings()
    assert WindowSettings().rate_window == "sliding" and WindowSettings().tpd_reset_utc_offset_hours == 8


def test_tpd_resets_at_1600_utc_by_default_not_24h_after_first_request():
    clock = Clock(15 * HOUR)  # 15:00 UTC = 23:00 in Beijing
    engine = make_engine(clock, limits=LimitsTruth(tpd=1000))
    assert offer(engine, 600) == "ok"
    clock.t = 16 * HOUR - 1  # 23:59:59 Beijing: same day
    assert offer(engine, 600) == PREFIX + "TPD rate limit,current:600, limit:1000"
    clock.t = 16 * HOUR  # midnight UTC+8: a fresh day only one hour after the first request
    assert offer(engine, 600) == "ok"
    assert offer(engine, 600) == PREFIX + "TPD rate limit,current:600, limit:1000"
    clock.t = 40 * HOUR - 1  # the new day lasts until 16:00 UTC the day after
    assert offer(engine, 600).endswith("current:600, limit:1000")
    clock.t = 40 * HOUR
    assert offer(engine, 600) == "ok"


def test_tpd_reset_offset_is_configurable():
    clock = Clock(15 * HOUR)
    engine = make_engine(clock, limits=LimitsTruth(tpd=1000), window=WindowSettings(tpd_reset_utc_offset_hours=0))
    assert offer(engine, 600) == "ok"
    clock.t = 16 * HOUR  # no reset at 16:00 UTC under UTC+0 ...
    assert offer(engine, 600).endswith("TPD rate limit,current:600, limit:1000")
    clock.t = 24 * HOUR  # ... but at midnight UTC
    assert offer(engine, 600) == "ok"


def test_fixed_rpm_window_frees_every_slot_at_the_minute_boundary():
    clock = Clock(150.0)
    engine = make_engine(clock, limits=LimitsTruth(rpm=3), window=WindowSettings(rate_window="fixed"))
    for t in (150.0, 155.0, 159.0):
        clock.t = t
        assert offer(engine) == "ok"
    clock.t = 170.0  # the 429 points at the minute boundary, 10 s away
    assert offer(engine) == PREFIX + "max RPM: 3, please try again after 10 seconds"
    clock.t = 180.0
    assert [offer(engine) for _ in range(3)] == ["ok"] * 3
    assert offer(engine) == PREFIX + "max RPM: 3, please try again after 60 seconds"


def test_sliding_rpm_window_frees_a_slot_60s_after_each_admission():
    clock = Clock(150.0)
    engine = make_engine(clock, limits=LimitsTruth(rpm=3))
    for t in (150.0, 155.0, 159.0):
        clock.t = t
        assert offer(engine) == "ok"
    clock.t = 180.0  # nothing has slid out yet: the oldest admission leaves at 210
    assert offer(engine) == PREFIX + "max RPM: 3, please try again after 30 seconds"
    clock.t = 210.0
    assert offer(engine) == "ok"
    assert offer(engine) == PREFIX + "max RPM: 3, please try again after 5 seconds"


def test_fixed_tpm_window_resets_at_the_minute_boundary():
    clock = Clock(119.0)
    engine = make_engine(clock, limits=LimitsTruth(tpm=1000), window=WindowSettings(rate_window="fixed"))
    assert offer(engine, 800) == "ok"
    assert offer(engine, 800) == PREFIX + "TPM rate limit, current:800, limit:1000"
    clock.t = 120.0
    assert offer(engine, 800) == "ok"


def _kind(message: str) -> str | None:
    if message == "ok":
        return None
    return next(k for k, needle in (("rpm", "max RPM"), ("tpm", "TPM rate"), ("tpd", "TPD rate")) if needle in message)


@pytest.mark.parametrize(
    "window",
    [
        WindowSettings(),
        WindowSettings(rate_window="fixed"),
        WindowSettings(rate_window="fixed", tpd_reset_utc_offset_hours=-5.5),
    ],
)
def test_emulator_refuses_exactly_what_the_reference_rule_refuses(window):
    rng = np.random.default_rng(7)
    limits = {"concurrency": None, "rpm": 5.0, "tpm": 3000.0, "tpd": 40_000.0, "rpd": None}
    assert set(limits) == set(LIMITS)
    ref = AccountState(limits, window)
    clock = Clock()
    engine = make_engine(clock, limits=LimitsTruth(rpm=5, tpm=3000, tpd=40_000), window=window)
    t, kinds = 0.0, []
    for _ in range(3000):  # ~3 emulated days: gaps mostly of seconds, sometimes of hours
        t += float(rng.exponential(5.0) if rng.random() < 0.99 else rng.exponential(4 * HOUR))
        reserved = int(P + rng.integers(1, 900))
        clock.t = t
        got = _kind(offer(engine, reserved))
        assert got == ref.offer(t, reserved, 0.0), f"request at t={t:.1f}s reserving {reserved}"
        kinds.append(got)
    assert {None, "rpm", "tpm", "tpd"} <= set(kinds)  # the comparison exercised every limit


def test_window_from_yaml_and_its_errors(tmp_path):
    p = tmp_path / "em.yaml"
    p.write_text("window:\n  rate_window: fixed\n  tpd_reset_utc_offset_hours: 0\n")
    assert load_emulator_config(p).window == WindowSettings(rate_window="fixed", tpd_reset_utc_offset_hours=0)
    p.write_text("window:\n  rate_window: hourly\n")
    with pytest.raises(ConfigError, match=r"field window\.rate_window.*'hourly'"):
        load_emulator_config(p)
