"""Long simulations (a month, or months with growth) in day chunks, locally or across Dask workers.

Each day's arrivals and token draws come from that day's own random stream, `SeedSequence(seed).spawn(days)[d]`,
so the days can be drawn anywhere, in any order, in parallel. The rate-limit kernel then runs the days in time
order on one `KernelState` that carries everything across each midnight: requests in flight (the concurrency
heap), the RPM/TPM window's contents, tokens and requests used today (TPD/RPD), scheduled retries, the jitter
generator and the per-minute series. On Dask the state travels from task to task (a chain of tasks, each
depending on the previous day's), the draws run in parallel; locally the same arrays go through the same kernel
calls in one process. The two give identical results for the same seed.

numba compiles the kernel once per worker process (`cache=True` loads it from disk after the first time): the
workers are warmed once with `Client.run` before any day is sent.

Growth is the simulator's: calendar-month steps counted from the scenario's `as_of` month
(`kimiplan.capacity.arrivals.growth_factors`).
"""

from __future__ import annotations

import numpy as np

from kimiplan.errors import ConfigError

DAY_S = 86400.0


def day_rates(scenario, days: int, start, share: float) -> np.ndarray:
    """Requests per second in each minute of each day, shape (days, 1440), growth included."""
    from kimiplan.capacity.arrivals import growth_factors, rate_per_minute

    horizon = days * DAY_S
    g = scenario.traffic.monthly_growth
    rate = rate_per_minute(scenario.traffic, horizon, start) * growth_factors(g, scenario.as_of, horizon, start) * share
    return rate.reshape(days, 1440)


def _drawer(scenario, card, routes):
    from kimiplan.workload.draws import draw_route, route_context

    shares = np.array([r.share for r in routes])
    ctxs = [route_context(scenario, r, card) for r in routes]

    def columns(d):
        return d["reserved_tokens"], d["input_tokens"] + d["completion_tokens"], d["latency_s"], d["api_calls"]

    def draw(n: int, rng: np.random.Generator):
        """(reserved, billed, latency, API calls, route index) of n requests."""
        if len(routes) == 1:
            cols = tuple(np.asarray(c, dtype=np.float64) for c in columns(draw_route(routes[0], n, rng, ctxs[0])))
            return (*cols, np.zeros(0, dtype=np.int32))  # one route: the kernel needs no route array
        which = rng.choice(len(routes), size=n, p=shares / shares.sum())
        out = tuple(np.empty(n) for _ in range(4))
        for i, route in enumerate(routes):
            idx = np.flatnonzero(which == i)
            if idx.size:
                for dest, c in zip(out, columns(draw_route(route, idx.size, rng, ctxs[i]))):
                    dest[idx] = np.broadcast_to(c, idx.shape)
        return (*out, which.astype(np.int32))

    return draw


def draw_day(scenario, card, day: int, rate_day: np.ndarray, seed_words: tuple) -> tuple[np.ndarray, ...]:
    """Day `day`'s requests: (arrival time since the start, reserved tokens, billed tokens, latency, API calls,
    route index)."""
    from kimiplan.capacity.arrivals import poisson_arrivals

    entropy, *key = seed_words
    rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=tuple(key)))
    online = [r for r in scenario.routes if not r.batch]
    t = np.concatenate([np.zeros(0), *poisson_arrivals(rate_day, DAY_S, rng)]) + day * DAY_S
    res, bill, lat, calls, route = _drawer(scenario, card, online)(t.size, rng)
    # Writable float64 copies: numba compiles a separate kernel for read-only arrays (a broadcast view is one).
    cols = tuple(np.array(np.broadcast_to(a, t.shape), dtype=np.float64) for a in (t, res, bill, lat, calls))
    return (*cols, np.array(route, dtype=np.int32))


def kernel_step(state, arrays, kargs: dict, final: bool):
    """Run one day through the kernel (and, after the last day, the drain of retries due before the horizon)."""
    state.run(*arrays, final=False, **kargs)
    if final:
        empty = np.zeros(0)
        state.run(empty, empty, empty, empty, empty, final=True, **kargs)
    return state


def kernel_ready() -> bool:
    """Whether this process holds a compiled kernel (numba's own record of its compiled signatures)."""
    from kimiplan.capacity.sim import kernel as K

    return bool(K.run_chunk.signatures)


def warm_kernel() -> bool:
    """Compile (or load from numba's cache) the kernel in this process, once: a tiny run."""
    if kernel_ready():
        return True
    from kimiplan.capacity.sim import kernel as K
    from kimiplan.capacity.sim.simulate import kernel_args
    from kimiplan.model.settings import SimSettings

    lim = np.array([2.0, 10.0, 1e6, -1.0, -1.0])
    state = K.KernelState(lim, 120.0, seed=1)
    a = np.array([0.0, 1.0, 2.0])
    arrays = (a, a + 10, a + 10, a + 1, np.ones(3), np.zeros(0, dtype=np.int32))
    kernel_step(state, arrays, kernel_args(lim, SimSettings(hours=1), 120.0), True)
    return kernel_ready()


def simulate_long(
    scenario,
    days: int,
    *,
    catalog=None,
    settings=None,
    tier=None,
    engine: str = "local",
    client=None,
    scheduler: str | None = None,
):
    """Simulate `days` days of the scenario (growth included) in day chunks; returns a `SimResult`.

    `engine="dask"`: the days are drawn in parallel on an existing `distributed.Client` (`client=`) or the
    scheduler at `scheduler=`, and the kernel state is carried from day to day between the workers. The result
    equals `engine="local"` for the same seed (settings.seed, else the scenario's)."""
    from kimiplan.capacity.sim import kernel as K
    from kimiplan.capacity.sim.simulate import kernel_args, result_from_state
    from kimiplan.catalog.admission import limits_array, scenario_limits
    from kimiplan.catalog.resolve import price_card
    from kimiplan.model.settings import SimSettings

    if not (isinstance(days, int) and 1 <= days <= 3660):
        raise ConfigError(f"days must be a whole number in [1, 3660], got {days!r}")
    if engine not in ("local", "dask"):
        raise ConfigError(f"engine must be 'local' or 'dask', got {engine!r}")
    settings = settings if settings is not None else SimSettings.for_scenario(scenario)
    limits = scenario_limits(scenario, catalog, tier)
    if all(v is None for v in limits.values()):
        raise ConfigError("tier sets no limit (concurrency, rpm, tpm, tpd, rpd): nothing to simulate")
    online = [r for r in scenario.routes if not r.batch]
    if not online:
        raise ConfigError(f"routes: every route of {scenario.name!r} is batch: nothing counts against the limits")
    horizon = days * DAY_S
    seed = scenario.seed if settings.seed is None else settings.seed
    settings = settings.model_copy(
        update={"seed": seed, "start": settings.start or scenario.as_of, "hours": horizon / 3600.0}
    )
    card = price_card(scenario, catalog)
    rates = day_rates(scenario, days, settings.start, sum(r.share for r in online))
    kids = np.random.SeedSequence(seed).spawn(days)
    words = [(k.entropy, *k.spawn_key) for k in kids]
    lim = limits_array(limits)
    kargs = kernel_args(lim, settings, horizon)
    names = [r.name for r in online]
    if engine == "local":
        state = K.KernelState(lim, horizon, seed=seed, n_routes=len(names))
        for d in range(days):
            state = kernel_step(state, draw_day(scenario, card, d, rates[d], words[d]), kargs, d == days - 1)
        return result_from_state(state, limits, horizon, settings, scenario.traffic.monthly_growth, names)
    own = None
    if client is None:
        if not scheduler:
            raise ConfigError("engine='dask' needs client= (a distributed.Client) or scheduler= (an address)")
        from kimiplan.sweeps.run import dask_client_class

        Client = dask_client_class()

        try:
            own = client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    try:
        client.run(warm_kernel)  # numba: compile once per worker, before any day arrives
        sc_f, card_f = client.scatter([scenario, card], broadcast=True, hash=False)  # keys of this call only
        drawn = [client.submit(draw_day, sc_f, card_f, d, rates[d], words[d], pure=False) for d in range(days)]
        state_f = client.submit(K.KernelState, lim, horizon, seed=seed, n_routes=len(names), pure=False)
        for d in range(days):
            state_f = client.submit(kernel_step, state_f, drawn[d], kargs, d == days - 1, pure=False)
        state = state_f.result()
    finally:
        if own is not None:
            own.close()
    return result_from_state(state, limits, horizon, settings, scenario.traffic.monthly_growth, names)
