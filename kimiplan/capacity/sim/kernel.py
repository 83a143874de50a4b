"""Compiled per-request admission kernel (numba).

The kernel consumes one chunk of requests (sorted arrival times with their reserved tokens, billed tokens and
latency) and carries every piece of state across chunks in plain numpy arrays, so a 30-day run streams in
bounded memory. It knows nothing about scenarios: `kimiplan.capacity.sim.simulate` builds the chunks.

State that can outgrow its buffer (the 60 s window log, the retry heap) makes the kernel return early with a
status code; `KernelState.grow` enlarges the buffer and the caller resumes at the returned index. Checks are
done before an event changes any state, so a resumed call continues exactly where the previous one stopped.

Every function is compiled with `_nrt=False`: the kernel allocates nothing, and with numba's runtime on, each
inlined helper that takes an array paid an atomic incref/decref pair, about a third of the time per request
(numba issue #2350 shows the same effect).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kimiplan.model.settings import SDK_MAX_RETRY_AFTER_S, backoff_s, sdk_backoff_s

# The one backoff model (KimiClient.retry_delay calls the same function), compiled for the kernel.
_backoff = njit(cache=True, inline="always")(backoff_s)
# The OpenAI SDK's schedule (constants and source quoted in kimiplan.model.settings).
_sdk_backoff = njit(cache=True, inline="always")(sdk_backoff_s)

# Limit indices, in the order the kernel checks them. The first limit a request breaks is the one recorded.
CONCURRENCY, RPM, TPM, TPD, RPD = 0, 1, 2, 3, 4
LIMIT_NAMES = ("concurrency", "rpm", "tpm", "tpd", "rpd")
N_LIMITS = 5

# Client behaviours.
MODE_NONE, MODE_RETRY, MODE_PACE, MODE_SDK = 0, 1, 2, 3
# What a 429 tells the client about when to come back: nothing, or a Retry-After in whole seconds.
HINT_NONE, HINT_SECONDS = 0, 1

# Kernel return status.
DONE, NEED_RING, NEED_RETRY = 0, 1, 2

# Integer state slots.
I_HEAP_N, I_RING_HEAD, I_RING_N, I_DAY, I_MINUTE, I_RT_N, I_FIX_N = 0, 1, 2, 3, 4, 5, 6
N_ISTATE = 7
# Float state slots.
F_RING_TOK, F_DAY_TOK, F_DAY_REQ, F_LAST_START, F_FIX_TOK, F_RING_REQ = 0, 1, 2, 3, 4, 5
N_FSTATE = 6

# Counter slots.
C_FRESH, C_ATTEMPTS, C_ADMITTED, C_GAVE_UP, C_LATE, C_RETRIES = 0, 1, 2, 3, 4, 5
C_REFUSED0 = 6  # C_REFUSED0 + limit index
N_COUNTERS = C_REFUSED0 + N_LIMITS
# Per-route counter columns (route_cnt[route, column]); attempts of a route = admitted + refused.
R_FRESH, R_ADMITTED, R_GAVE_UP, R_LATE = 0, 1, 2, 3
R_REFUSED0 = 4  # R_REFUSED0 + limit index
N_ROUTE_COUNTERS = R_REFUSED0 + N_LIMITS
# Float sums.
S_WAIT, S_LATENCY, S_RESERVED, S_BILLED, S_WAIT_ADMITTED = 0, 1, 2, 3, 4
N_SUMS = 5

# Log-spaced histogram for waits and end-to-end latency, binned on the bits of the float64 itself (as HDR
# histograms do): the exponent and the top HIST_SUB_BITS of the mantissa give 64 bins per octave, each at most
# 1.6 % wide, from 2**-10 s (about 1 ms) to 2**20 s (12 days). A log10 per sample cost ~28 ns a request.
HIST_SUB_BITS = 6
HIST_SHIFT = 52 - HIST_SUB_BITS
HIST_LO_OCT, HIST_HI_OCT = -10, 20
HIST_KEY_LO = (1023 + HIST_LO_OCT) << HIST_SUB_BITS  # key of 2**-10
HIST_KEY_HI = (1023 + HIST_HI_OCT) << HIST_SUB_BITS
# bin 0: exactly zero; bin 1: (0, 2**-10); bins 2..: one per key; last bin: 2**20 and over.
HIST_BINS = HIST_KEY_HI - HIST_KEY_LO + 3


@njit(cache=True, inline="always", _nrt=False)
def _splitmix(state):
    # splitmix64 on a one-element uint64 array: a reproducible jitter stream owned by the run, not global.
    state[0] += np.uint64(0x9E3779B97F4A7C15)
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always", _nrt=False)
def _hist_bin(x):
    if x <= 0.0:
        return 0
    key = np.float64(x).view(np.int64) >> HIST_SHIFT  # positive floats order like their bits
    if key < HIST_KEY_LO:
        return 1
    if key >= HIST_KEY_HI:
        return HIST_BINS - 1
    return key - HIST_KEY_LO + 2


@njit(cache=True, inline="always", _nrt=False)
def _sift_up(h, i, v):
    """Place v at hole i of the 4-ary min-heap, moving larger parents down."""
    while i > 0:
        p = (i - 1) >> 2
        if h[p] <= v:
            break
        h[i] = h[p]
        i = p
    h[i] = v


@njit(cache=True, inline="always", _nrt=False)
def _heap_push(h, n, v):
    # A 4-ary min-heap: half the depth of a binary one, and its four children share a cache line.
    _sift_up(h, n, v)
    return n + 1


@njit(cache=True, inline="always", _nrt=False)
def _heap_pop(h, n):
    # Floyd's pop: walk the hole down to a leaf along the smallest child (chosen with selects, not branches),
    # then sift the last item up. Fewer mispredicted branches than the textbook sift-down, which dominates
    # the M/G/c/c loop.
    n -= 1
    last = h[n]
    i = 0
    while True:
        c = 4 * i + 1
        if c + 3 < n:
            a = c + (h[c + 1] < h[c])
            b = c + 2 + (h[c + 3] < h[c + 2])
            m = b if h[b] < h[a] else a
            h[i] = h[m]
            i = m
        else:
            if c < n:
                m = c
                for j in range(c + 1, n):
                    if h[j] < h[m]:
                        m = j
                h[i] = h[m]
                i = m
            break
    _sift_up(h, i, last)
    return n


@njit(cache=True, inline="always", _nrt=False)
def _rt_push(rt_t, rt_i, n, t, payload):
    # Min-heap on time with an int64 payload row index (into rt_p) that moves with it.
    i = n
    rt_t[i] = t
    rt_i[i] = payload
    while i > 0:
        p = (i - 1) >> 1
        if rt_t[p] <= rt_t[i]:
            break
        rt_t[p], rt_t[i] = rt_t[i], rt_t[p]
        rt_i[p], rt_i[i] = rt_i[i], rt_i[p]
        i = p
    return n + 1


@njit(cache=True, inline="always", _nrt=False)
def _rt_pop(rt_t, rt_i, n):
    n -= 1
    rt_t[0] = rt_t[n]
    rt_i[0] = rt_i[n]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        r = left + 1
        c = left
        if r < n and rt_t[r] < rt_t[left]:
            c = r
        if rt_t[i] <= rt_t[c]:
            break
        rt_t[i], rt_t[c] = rt_t[c], rt_t[i]
        rt_i[i], rt_i[c] = rt_i[c], rt_i[i]
        i = c
    return n


@njit(cache=True, inline="always", _nrt=False)
def _expire(t, lim, fixed, ist, fst, heap, ring_t, ring_tok, ring_cnt, day_s, day_offset):
    """Bring every window up to time t (t never decreases)."""
    if lim[CONCURRENCY] >= 0:
        n = ist[I_HEAP_N]
        while n > 0 and heap[0] <= t:
            n = _heap_pop(heap, n)
        ist[I_HEAP_N] = n
    if lim[RPM] >= 0 or lim[TPM] >= 0:
        if fixed:
            m = int(math.floor(t / 60.0))
            if m != ist[I_MINUTE]:
                ist[I_MINUTE] = m
                ist[I_FIX_N] = 0
                fst[F_FIX_TOK] = 0.0
        else:
            cap = ring_t.shape[0]
            h = ist[I_RING_HEAD]
            n = ist[I_RING_N]
            tok = fst[F_RING_TOK]
            req = fst[F_RING_REQ]
            # An entry admitted at s counts while t < s + 60 (a sliding 60 s log).
            while n > 0 and ring_t[h] + 60.0 <= t:
                tok -= ring_tok[h]
                req -= ring_cnt[h]
                h += 1
                if h == cap:
                    h = 0
                n -= 1
            if n == 0:
                tok = 0.0  # drop accumulated rounding
                req = 0.0
            ist[I_RING_HEAD] = h
            ist[I_RING_N] = n
            fst[F_RING_TOK] = tok
            fst[F_RING_REQ] = req
    if lim[TPD] >= 0 or lim[RPD] >= 0:
        d = int(math.floor((t + day_offset) / day_s))
        if d != ist[I_DAY]:
            ist[I_DAY] = d
            fst[F_DAY_TOK] = 0.0
            fst[F_DAY_REQ] = 0.0


@njit(cache=True, inline="always", _nrt=False)
def _first_broken(r, calls, lim, fixed, ist, fst):
    """Index of the first limit that refuses a request reserving r tokens and making `calls` API calls now
    (they all count against RPM/RPD at its start), or -1 if it is admitted."""
    if lim[CONCURRENCY] >= 0 and ist[I_HEAP_N] + 1 > lim[CONCURRENCY]:
        return CONCURRENCY
    if fixed:
        n_win = ist[I_FIX_N]
        tok_win = fst[F_FIX_TOK]
    else:
        n_win = fst[F_RING_REQ]
        tok_win = fst[F_RING_TOK]
    if lim[RPM] >= 0 and n_win + calls > lim[RPM]:
        return RPM
    if lim[TPM] >= 0 and tok_win + r > lim[TPM]:
        return TPM
    if lim[TPD] >= 0 and fst[F_DAY_TOK] + r > lim[TPD]:
        return TPD
    if lim[RPD] >= 0 and fst[F_DAY_REQ] + calls > lim[RPD]:
        return RPD
    return -1


@njit(cache=True, inline="always", _nrt=False)
def _next_chance(k, t, lim, fixed, ist, heap, ring_t, day_s, day_offset):
    """Earliest time after t at which limit k may have room again (the pacing client waits until then)."""
    if k == CONCURRENCY:
        return heap[0]
    if k == RPM or k == TPM:
        if fixed:
            return (math.floor(t / 60.0) + 1.0) * 60.0
        return ring_t[ist[I_RING_HEAD]] + 60.0
    # Daily limits: the next reset.
    return (math.floor((t + day_offset) / day_s) + 1.0) * day_s - day_offset


@njit(cache=True, inline="always", _nrt=False)
def _retry_after(k, r, t, lim, fixed, ist, fst, ring_t, ring_tok):
    """The Retry-After (whole seconds) a server that sends one puts on a refusal by limit k, as the emulator
    does (the seconds of its "try again after N seconds"): concurrency 1; RPM until the oldest admission leaves
    the window; TPM until enough reservations leave it for r more tokens; the fixed window's next minute. -1:
    no header (daily limits, or a request larger than the TPM limit)."""
    if k == CONCURRENCY:
        return 1.0
    if k != RPM and k != TPM:
        return -1.0
    if k == TPM and r > lim[TPM]:
        return -1.0
    if fixed:
        return max(1.0, math.ceil((math.floor(t / 60.0) + 1.0) * 60.0 - t))
    cap = ring_t.shape[0]
    h = ist[I_RING_HEAD]
    if k == RPM:
        return max(1.0, math.ceil(ring_t[h] + 60.0 - t))
    total = fst[F_RING_TOK]
    for _j in range(ist[I_RING_N]):
        total -= ring_tok[h]
        if total + r <= lim[TPM]:
            return max(1.0, math.ceil(ring_t[h] + 60.0 - t))
        h += 1
        if h == cap:
            h = 0
    return 1.0


@njit(cache=True, nogil=True, _nrt=False)
def run_chunk(
    start,
    arr_t,
    arr_res,
    arr_bill,
    arr_lat,
    arr_calls,
    arr_route,
    lim,
    pace_lim,
    fixed,
    day_s,
    day_offset,
    mode,
    max_retries,
    backoff_base,
    backoff_cap,
    jitter,
    hint,
    horizon,
    final,
    ist,
    fst,
    heap,
    ring_t,
    ring_tok,
    ring_cnt,
    rt_t,
    rt_i,
    rt_p,
    rt_free,
    rng,
    counters,
    route_cnt,
    sums,
    min_att,
    min_adm,
    min_calls,
    min_tok,
    min_ref,
    sec_diff,
    sec_peak,
    day_tok,
    day_bill,
    wait_hist,
    e2e_hist,
):
    """Process fresh requests arr_*[start:] interleaved with due retries. Returns (status, next index).

    lim / pace_lim: float64[5] limits (-1 = none); pace_lim are the client's own (headroom-scaled) limits.
    arr_calls: API calls per request (1, or 1 + searches); they all count against RPM/RPD when it starts.
    arr_route: int32 route index per request (the row of route_cnt it counts in), or empty: all route 0.
    rt_p: float64[cap, 7] retry payload rows (arrival, reserved, billed, latency, attempt, calls, route);
    rt_free: free rows.
    """
    n_fresh = arr_t.shape[0]
    by_route = arr_route.shape[0] > 0  # an empty route array: every request is route 0, nothing more to read
    n_min = min_att.shape[0]
    n_sec = sec_peak.shape[0]
    n_day = day_tok.shape[0]
    ring_cap = ring_t.shape[0]
    rt_cap = rt_t.shape[0]
    use_ring = (lim[RPM] >= 0 or lim[TPM] >= 0) and not fixed
    i = start
    while True:
        # Pick the next event: a due retry (time <= next fresh arrival) or the next fresh arrival.
        from_retry = False
        if ist[I_RT_N] > 0:
            if i < n_fresh:
                from_retry = rt_t[0] <= arr_t[i]
            elif final:
                from_retry = rt_t[0] < horizon
        if not from_retry and i >= n_fresh:
            return DONE, i
        # Room checks before any state changes (so a resumed call replays this event exactly).
        if use_ring and ist[I_RING_N] == ring_cap:
            return NEED_RING, i
        if mode != MODE_NONE and ist[I_RT_N] == rt_cap:
            return NEED_RETRY, i
        if from_retry:
            t = rt_t[0]
            row = rt_i[0]
            ist[I_RT_N] = _rt_pop(rt_t, rt_i, ist[I_RT_N])
            arrival = rt_p[row, 0]
            r = rt_p[row, 1]
            bill = rt_p[row, 2]
            lat = rt_p[row, 3]
            attempt = int(rt_p[row, 4])
            calls = rt_p[row, 5]
            route = int(rt_p[row, 6])
            rt_free[0] -= 1  # release the payload row (stack of free rows)
            rt_free[1 + rt_free[0]] = row
        else:
            t = arr_t[i]
            arrival = t
            r = arr_res[i]
            bill = arr_bill[i]
            lat = arr_lat[i]
            calls = arr_calls[i]
            route = arr_route[i] if by_route else 0
            attempt = 0
            i += 1
            counters[C_FRESH] += 1
            route_cnt[route, R_FRESH] += 1
        if mode == MODE_PACE:
            # The client mirrors the account's own accounting and holds the request until it would fit.
            if t < fst[F_LAST_START]:
                t = fst[F_LAST_START]  # FIFO: a request never overtakes an earlier one
            impossible = False
            while True:
                _expire(t, lim, fixed, ist, fst, heap, ring_t, ring_tok, ring_cnt, day_s, day_offset)
                k = _first_broken(r, calls, pace_lim, fixed, ist, fst)
                if k < 0:
                    break
                if (
                    (k == TPM and r > pace_lim[TPM])
                    or (k == TPD and r > pace_lim[TPD])
                    or (k == RPM and calls > pace_lim[RPM])
                    or (k == RPD and calls > pace_lim[RPD])
                ):
                    impossible = True  # no wait can make room for it
                    break
                t = _next_chance(k, t, lim, fixed, ist, heap, ring_t, day_s, day_offset)
            if t >= horizon and not impossible:
                counters[C_LATE] += 1  # still waiting in the client when the horizon ends
                route_cnt[route, R_LATE] += 1
                fst[F_LAST_START] = t
                continue
        else:
            _expire(t, lim, fixed, ist, fst, heap, ring_t, ring_tok, ring_cnt, day_s, day_offset)
        counters[C_ATTEMPTS] += 1
        m = int(t / 60.0)
        if m >= n_min:
            m = n_min - 1
        min_att[m] += 1
        k = _first_broken(r, calls, lim, fixed, ist, fst)
        if k >= 0:
            counters[C_REFUSED0 + k] += 1
            min_ref[m, k] += 1
            route_cnt[route, R_REFUSED0 + k] += 1
            retry = mode != MODE_NONE and attempt < max_retries
            d = 0.0
            if retry:
                if mode == MODE_SDK:
                    d = _retry_after(k, r, t, lim, fixed, ist, fst, ring_t, ring_tok) if hint == HINT_SECONDS else -1.0
                    if d < 0:  # no Retry-After on this refusal: the SDK's own backoff
                        d = _sdk_backoff(attempt, _splitmix(rng))
                    else:
                        retry = d <= SDK_MAX_RETRY_AFTER_S  # over 120 s the SDK raises at once
                else:
                    # Exponential backoff with full jitter; the retry is a new request for every limit.
                    d = _backoff(attempt, backoff_base, backoff_cap, _splitmix(rng) if jitter else 1.0)
            if retry:
                row = rt_free[1 + rt_free[0]]
                rt_free[0] += 1
                rt_p[row, 0] = arrival
                rt_p[row, 1] = r
                rt_p[row, 2] = bill
                rt_p[row, 3] = lat
                rt_p[row, 4] = attempt + 1
                rt_p[row, 5] = calls
                rt_p[row, 6] = route
                ist[I_RT_N] = _rt_push(rt_t, rt_i, ist[I_RT_N], t + d, row)
                counters[C_RETRIES] += 1
            else:
                counters[C_GAVE_UP] += 1
                route_cnt[route, R_GAVE_UP] += 1
            continue
        # Admitted: charge every window.
        end = t + lat
        if lim[CONCURRENCY] >= 0:
            ist[I_HEAP_N] = _heap_push(heap, ist[I_HEAP_N], end)
        if lim[RPM] >= 0 or lim[TPM] >= 0:
            if fixed:
                ist[I_FIX_N] += int(calls)
                fst[F_FIX_TOK] += r
            else:
                pos = ist[I_RING_HEAD] + ist[I_RING_N]
                if pos >= ring_cap:
                    pos -= ring_cap
                ring_t[pos] = t
                ring_tok[pos] = r
                ring_cnt[pos] = calls
                ist[I_RING_N] += 1
                fst[F_RING_TOK] += r
                fst[F_RING_REQ] += calls
        fst[F_DAY_TOK] += r
        fst[F_DAY_REQ] += calls
        if t > fst[F_LAST_START]:
            fst[F_LAST_START] = t
        counters[C_ADMITTED] += 1
        route_cnt[route, R_ADMITTED] += 1
        min_adm[m] += 1
        min_calls[m] += calls
        min_tok[m] += r
        wait = t - arrival
        sums[S_WAIT_ADMITTED] += wait
        sums[S_LATENCY] += lat
        sums[S_RESERVED] += r
        sums[S_BILLED] += bill
        wait_hist[_hist_bin(wait)] += 1
        e2e_hist[_hist_bin(wait + lat)] += 1
        # In-flight per second: +1 from the second after the start, -1 from the second after the end, so the
        # cumulative sum at index s counts requests in flight at the instant s.
        s0 = int(t) + 1
        s1 = int(end) + 1
        if s0 < n_sec:
            sec_diff[s0] += 1
            if s1 < n_sec:
                sec_diff[s1] -= 1
        sp = int(t)
        if sp < n_sec and lim[CONCURRENCY] >= 0 and ist[I_HEAP_N] > sec_peak[sp]:
            sec_peak[sp] = ist[I_HEAP_N]
        # Days are counted between TPD resets so the series lines up with the TPD limit; day 0 may be partial.
        d = int(math.floor((t + day_offset) / day_s) - math.floor(day_offset / day_s))
        if d >= n_day:
            d = n_day - 1
        day_tok[d] += r
        day_bill[d] += bill


def _key_value(key) -> np.ndarray:
    return (np.asarray(key, dtype=np.int64) << HIST_SHIFT).view(np.float64)


def hist_edges() -> np.ndarray:
    """Upper edges (seconds) of the wait/latency histogram bins; bin 0 holds exact zeros."""
    edges = np.empty(HIST_BINS, dtype=np.float64)
    edges[0] = 0.0
    edges[1:-1] = _key_value(np.arange(HIST_KEY_LO, HIST_KEY_HI + 1))
    edges[-1] = np.inf
    return edges


def hist_quantile(hist: np.ndarray, q: float) -> float:
    """Quantile from the log histogram (geometric midpoint of the bin that holds it)."""
    total = hist.sum()
    if total == 0:
        return float("nan")
    c = np.cumsum(hist)
    b = int(np.searchsorted(c, q * total, side="left"))
    if b == 0:
        return 0.0
    edges = hist_edges()
    if b == 1:
        return float(edges[1] / 2)
    if b == HIST_BINS - 1:
        return float(edges[-2])
    return float(np.sqrt(edges[b - 1] * edges[b]))


class KernelState:
    """Every array the kernel reads and writes, sized for one run. Pure data; no behaviour beyond growth."""

    def __init__(
        self,
        limits: np.ndarray,
        horizon_s: float,
        day_s: float = 86400.0,
        seed: int = 0,
        ring_cap: int | None = None,
        retry_cap: int = 1024,
        n_routes: int = 1,
    ):
        self.ist = np.zeros(N_ISTATE, dtype=np.int64)
        self.ist[I_MINUTE] = -(2**62)
        self.ist[I_DAY] = -(2**62)
        self.fst = np.zeros(N_FSTATE, dtype=np.float64)
        self.fst[F_LAST_START] = -np.inf
        conc = limits[CONCURRENCY]
        self.heap = np.zeros(max(int(conc), 1) if conc >= 0 else 1, dtype=np.float64)
        if ring_cap is None:
            # The window never holds more than RPM admitted requests; without an RPM it grows on demand.
            ring_cap = int(limits[RPM]) + 1 if limits[RPM] >= 0 else 4096
        self.ring_t = np.zeros(max(ring_cap, 1), dtype=np.float64)
        self.ring_tok = np.zeros_like(self.ring_t)
        self.ring_cnt = np.zeros_like(self.ring_t)
        self._alloc_retry(retry_cap)
        self.rng = np.array([(int(seed) * 0x2545F4914F6CDD1D + 1) % 2**64], dtype=np.uint64)
        self.counters = np.zeros(N_COUNTERS, dtype=np.int64)
        self.route_cnt = np.zeros((max(int(n_routes), 1), N_ROUTE_COUNTERS), dtype=np.int64)
        self.sums = np.zeros(N_SUMS, dtype=np.float64)
        n_min = int(np.ceil(horizon_s / 60.0)) + 1
        n_sec = int(np.ceil(horizon_s)) + 1
        n_day = int(np.ceil(horizon_s / day_s)) + 2  # a partial first and last day between resets
        self.min_att = np.zeros(n_min, dtype=np.int64)
        self.min_adm = np.zeros(n_min, dtype=np.int64)
        self.min_calls = np.zeros(n_min, dtype=np.float64)
        self.min_tok = np.zeros(n_min, dtype=np.float64)
        self.min_ref = np.zeros((n_min, N_LIMITS), dtype=np.int64)
        self.sec_diff = np.zeros(n_sec, dtype=np.int32)
        self.sec_peak = np.zeros(n_sec, dtype=np.int32)
        self.day_tok = np.zeros(n_day, dtype=np.float64)
        self.day_bill = np.zeros(n_day, dtype=np.float64)
        self.wait_hist = np.zeros(HIST_BINS, dtype=np.int64)
        self.e2e_hist = np.zeros(HIST_BINS, dtype=np.int64)

    def _alloc_retry(self, cap: int) -> None:
        self.rt_t = np.zeros(cap, dtype=np.float64)
        self.rt_i = np.zeros(cap, dtype=np.int64)
        self.rt_p = np.zeros((cap, 7), dtype=np.float64)
        # rt_free[0] = rows in use; rt_free[1:] = a stack of row ids (in-use ones first).
        self.rt_free = np.concatenate([[0], np.arange(cap)]).astype(np.int64)

    def grow(self, status: int) -> None:
        if status == NEED_RING:
            cap = self.ring_t.shape[0]
            h, n = self.ist[I_RING_HEAD], self.ist[I_RING_N]
            order = (h + np.arange(n)) % cap  # unroll the ring into order
            new_t = np.zeros(cap * 2, dtype=np.float64)
            new_tok = np.zeros(cap * 2, dtype=np.float64)
            new_cnt = np.zeros(cap * 2, dtype=np.float64)
            new_t[:n] = self.ring_t[order]
            new_tok[:n] = self.ring_tok[order]
            new_cnt[:n] = self.ring_cnt[order]
            self.ring_t, self.ring_tok, self.ring_cnt = new_t, new_tok, new_cnt
            self.ist[I_RING_HEAD] = 0
        elif status == NEED_RETRY:
            cap = self.rt_t.shape[0]
            n = self.ist[I_RT_N]
            old_t, old_i, old_p = self.rt_t, self.rt_i, self.rt_p
            self._alloc_retry(cap * 2)
            # Keep heap order and row ids; rows 0..cap-1 are all in use when the heap is full.
            self.rt_t[:n] = old_t[:n]
            self.rt_i[:n] = old_i[:n]
            self.rt_p[:cap] = old_p
            self.rt_free[0] = cap
            self.rt_free[1:] = np.concatenate([np.arange(cap), np.arange(cap, 2 * cap)])
        else:  # pragma: no cover - defensive
            raise ValueError(f"unknown kernel status {status}")

    def run(
        self,
        arr_t,
        arr_res,
        arr_bill,
        arr_lat,
        arr_calls,
        arr_route=None,
        *,
        limits,
        pace_limits,
        fixed,
        day_s,
        day_offset,
        mode,
        max_retries,
        backoff_base,
        backoff_cap,
        jitter,
        horizon,
        final,
        hint=HINT_NONE,
    ) -> None:
        arr_route = np.ascontiguousarray(np.zeros(0) if arr_route is None else arr_route, dtype=np.int32)
        start = 0
        while True:
            status, start = run_chunk(
                start,
                arr_t,
                arr_res,
                arr_bill,
                arr_lat,
                arr_calls,
                arr_route,
                limits,
                pace_limits,
                fixed,
                day_s,
                day_offset,
                mode,
                max_retries,
                backoff_base,
                backoff_cap,
                jitter,
                hint,
                horizon,
                final,
                self.ist,
                self.fst,
                self.heap,
                self.ring_t,
                self.ring_tok,
                self.ring_cnt,
                self.rt_t,
                self.rt_i,
                self.rt_p,
                self.rt_free,
                self.rng,
                self.counters,
                self.route_cnt,
                self.sums,
                self.min_att,
                self.min_adm,
                self.min_calls,
                self.min_tok,
                self.min_ref,
                self.sec_diff,
                self.sec_peak,
                self.day_tok,
                self.day_bill,
                self.wait_hist,
                self.e2e_hist,
            )
            if status == DONE:
                return
            self.grow(status)
