"""A compiled scanner for OTLP JSON lines: one pass over the bytes, no Python object per attribute.

DuckDB parses each export request fast but then builds every attribute of every span as nested structs
(about three quarters of the read's time). This scanner walks the bytes once (numba, GIL released, so two
threads scan two chunks at once) and keeps only what the reader needs: per span the byte offsets of its
scope, ids, name, times, status code and of the value of each attribute key the mapping names (the first
occurrence of the key, as `list_position` finds it), and per resource the values of the same keys.

It accepts a strict subset of what the DuckDB path reads: strict JSON in the OTLP shape, with the types the
OTLP JSON encoding writes (strings, int64 as a string or an integer, doubles as numbers, booleans). Anything
else (another type where the schema names a field, a duplicate field, an escaped key, a carriage return,
invalid UTF-8, a number it would have to round, a line that is not JSON anywhere but at the end of a file)
returns FALLBACK, and the caller reads the files the DuckDB way: the two paths give the same rows
(tests/test_logs_otel_scan.py holds them together).
"""

from __future__ import annotations

import numpy as np
from numba import njit

OK = 0
INVALID = -1  # not JSON (a cut last line): the line becomes one row that failed to parse
FALLBACK = -2  # valid JSON, perhaps, but outside the subset: read with DuckDB instead
FULL = -3  # the output arrays are full: call again with more room

# kinds of a value
K_UNSEEN, K_TEXT, K_ESCAPED, K_DOUBLE, K_SEENNULL = 0, 1, 2, 3, 4
# fixed columns of a span row
F_SCOPE, F_TRACE, F_SPAN, F_PARENT, F_NAME, F_START, F_END, F_STATUS = range(8)
NF = 8


def _lit(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8).copy()


L_RESOURCE_SPANS = _lit("resourceSpans")
L_RESOURCE = _lit("resource")
L_SCOPE_SPANS = _lit("scopeSpans")
L_SCOPE = _lit("scope")
L_SPANS = _lit("spans")
L_ATTRIBUTES = _lit("attributes")
L_NAME = _lit("name")
L_TRACE = _lit("traceId")
L_SPANID = _lit("spanId")
L_PARENT = _lit("parentSpanId")
L_START = _lit("startTimeUnixNano")
L_END = _lit("endTimeUnixNano")
L_STATUS = _lit("status")
L_CODE = _lit("code")
L_KEY = _lit("key")
L_VALUE = _lit("value")
L_SV = _lit("stringValue")
L_IV = _lit("intValue")
L_DV = _lit("doubleValue")
L_BV = _lit("boolValue")
L_AV = _lit("arrayValue")
L_VALUES = _lit("values")


@njit(cache=True)
def _eq(buf, s, e, lit):
    n = e - s
    if n != lit.shape[0]:
        return False
    for i in range(n):
        if buf[s + i] != lit[i]:
            return False
    return True


@njit(cache=True)
def _ws(buf, p, end):
    while p < end and (buf[p] == 32 or buf[p] == 9):
        p += 1
    return p


@njit(cache=True)
def _utf8(buf, p, end):
    """Position after the UTF-8 sequence at p (a byte >= 0x80), or FALLBACK if it is not valid UTF-8."""
    c = buf[p]
    if 0xC2 <= c <= 0xDF:
        n, lo, hi = 1, 0x80, 0xBF
    elif c == 0xE0:
        n, lo, hi = 2, 0xA0, 0xBF
    elif 0xE1 <= c <= 0xEC or c == 0xEE or c == 0xEF:
        n, lo, hi = 2, 0x80, 0xBF
    elif c == 0xED:
        n, lo, hi = 2, 0x80, 0x9F
    elif c == 0xF0:
        n, lo, hi = 3, 0x90, 0xBF
    elif 0xF1 <= c <= 0xF3:
        n, lo, hi = 3, 0x80, 0xBF
    elif c == 0xF4:
        n, lo, hi = 3, 0x80, 0x8F
    else:
        return FALLBACK
    if p + n >= end:
        return FALLBACK
    b = buf[p + 1]
    if b < lo or b > hi:
        return FALLBACK
    for i in range(2, n + 1):
        b = buf[p + i]
        if b < 0x80 or b > 0xBF:
            return FALLBACK
    return p + n + 1


@njit(cache=True)
def _string(buf, p, end):
    """At an opening quote: (position after the closing quote, 1 if escaped else 0), or (error, 0)."""
    p += 1
    esc = 0
    while p < end:
        c = buf[p]
        if c == 34:
            return p + 1, esc
        if c == 92:
            esc = 1
            if p + 1 >= end:
                return INVALID, 0
            d = buf[p + 1]
            if d == 117:  # \uXXXX
                if p + 5 >= end:
                    return INVALID, 0
                for i in range(2, 6):
                    h = buf[p + i]
                    if not (48 <= h <= 57 or 65 <= h <= 70 or 97 <= h <= 102):
                        return INVALID, 0
                p += 6
            elif d == 34 or d == 92 or d == 47 or d == 98 or d == 102 or d == 110 or d == 114 or d == 116:
                p += 2
            else:
                return INVALID, 0
        elif c < 32:
            return INVALID, 0
        elif c >= 128:
            p = _utf8(buf, p, end)
            if p < 0:
                return FALLBACK, 0
        else:
            p += 1
    return INVALID, 0


@njit(cache=True)
def _number(buf, p, end):
    """(position after the number, 1 for a plain integer that every reader writes back as it is, 0 for another
    number, 2 for one a reader might round or write otherwise: long mantissa, large exponent, -0), or
    (INVALID, 0)."""
    s = p
    neg = 0
    if p < end and buf[p] == 45:
        neg = 1
        p += 1
    if p >= end:
        return INVALID, 0
    if buf[p] == 48:
        p += 1
    elif 49 <= buf[p] <= 57:
        while p < end and 48 <= buf[p] <= 57:
            p += 1
    else:
        return INVALID, 0
    digits = p - s - neg
    lead = buf[s + neg]
    integer = True
    risky = False
    if p < end and buf[p] == 46:
        integer = False
        p += 1
        q = p
        while p < end and 48 <= buf[p] <= 57:
            p += 1
        if p == q:
            return INVALID, 0
        digits += p - q
    if p < end and (buf[p] == 101 or buf[p] == 69):
        integer = False
        p += 1
        if p < end and (buf[p] == 43 or buf[p] == 45):
            p += 1
        q = p
        while p < end and 48 <= buf[p] <= 57:
            p += 1
        if p == q:
            return INVALID, 0
        if p - q > 2:
            risky = True
    if integer:
        if neg and lead == 48:
            risky = True  # -0
        elif digits > 19 or (digits == 19 and lead >= 57):  # beyond 9e18: not surely an int64
            risky = True
    elif digits > 17:
        risky = True
    if risky:
        return p, 2
    return p, 1 if integer else 0


@njit(cache=True)
def _literal(buf, p, end):
    """At t, f or n: (position after true/false/null, 1 true, 0 false, -1 null), or (INVALID, 0)."""
    c = buf[p]
    if c == 116 and p + 4 <= end and buf[p + 1] == 114 and buf[p + 2] == 117 and buf[p + 3] == 101:
        return p + 4, 1
    if c == 102 and p + 5 <= end and buf[p + 1] == 97 and buf[p + 2] == 108 and buf[p + 3] == 115:
        if buf[p + 4] == 101:
            return p + 5, 0
    if c == 110 and p + 4 <= end and buf[p + 1] == 117 and buf[p + 2] == 108 and buf[p + 3] == 108:
        return p + 4, -1
    return INVALID, 0


@njit(cache=True)
def _skip(buf, p, end):
    """Skip any JSON value (validated); position after it, or an error."""
    if p >= end:
        return INVALID
    c = buf[p]
    if c == 34:
        q, _ = _string(buf, p, end)
        return q
    if c == 45 or 48 <= c <= 57:
        q, _ = _number(buf, p, end)
        return q
    if c == 116 or c == 102 or c == 110:
        q, _ = _literal(buf, p, end)
        return q
    depth = 0
    objects = np.uint64(0)  # bit d set: the container at depth d is an object (else an array)
    while True:
        p = _ws(buf, p, end)
        if p >= end:
            return INVALID
        c = buf[p]
        if c == 123 or c == 91:
            if depth >= 64:
                return FALLBACK
            if c == 123:
                objects |= np.uint64(1) << np.uint64(depth)
            else:
                objects &= ~(np.uint64(1) << np.uint64(depth))
            depth += 1
            p = _ws(buf, p + 1, end)
            if p < end and buf[p] == (125 if c == 123 else 93):
                depth -= 1
                p += 1
            elif c == 123:
                if p >= end or buf[p] != 34:
                    return INVALID
                p, _ = _string(buf, p, end)
                if p < 0:
                    return p
                p = _ws(buf, p, end)
                if p >= end or buf[p] != 58:
                    return INVALID
                p += 1
                continue
            else:
                continue
        elif c == 34:
            p, _ = _string(buf, p, end)
            if p < 0:
                return p
        elif c == 45 or 48 <= c <= 57:
            p, _ = _number(buf, p, end)
            if p < 0:
                return p
        elif c == 116 or c == 102 or c == 110:
            p, _ = _literal(buf, p, end)
            if p < 0:
                return p
        else:
            return INVALID
        # after a value: close containers or move to the next element
        while True:
            if depth == 0:
                return p
            p = _ws(buf, p, end)
            if p >= end:
                return INVALID
            c = buf[p]
            if c == 44:
                p += 1
                if (objects >> np.uint64(depth - 1)) & np.uint64(1):
                    p = _ws(buf, p, end)
                    if p >= end or buf[p] != 34:
                        return INVALID
                    p, _ = _string(buf, p, end)
                    if p < 0:
                        return p
                    p = _ws(buf, p, end)
                    if p >= end or buf[p] != 58:
                        return INVALID
                    p += 1
                break
            is_obj = (objects >> np.uint64(depth - 1)) & np.uint64(1)
            if (c == 125 and is_obj) or (c == 93 and not is_obj):
                depth -= 1
                p += 1
                continue
            return INVALID


@njit(cache=True)
def _member_key(buf, p, end):
    """At a member's key (after { or ,): (key start, key end, position after the colon) or (error, 0, 0)."""
    p = _ws(buf, p, end)
    if p >= end or buf[p] != 34:
        return INVALID, 0, 0
    s = p + 1
    q, esc = _string(buf, p, end)
    if q < 0:
        return q, 0, 0
    if esc:
        return FALLBACK, 0, 0  # escaped keys would need unescaping before matching
    e = q - 1
    q = _ws(buf, q, end)
    if q >= end or buf[q] != 58:
        return INVALID, 0, 0
    return s, e, _ws(buf, q + 1, end)


@njit(cache=True)
def _after_member(buf, p, end):
    """After a member's value: (position of the next key, 0), (position after }, 1), or (error, 0)."""
    p = _ws(buf, p, end)
    if p >= end:
        return INVALID, 0
    if buf[p] == 44:
        return p + 1, 0
    if buf[p] == 125:
        return p + 1, 1
    return INVALID, 0


@njit(cache=True)
def _after_element(buf, p, end):
    """After an array element: (position of the next element, 0), (position after ], 1), or (error, 0)."""
    p = _ws(buf, p, end)
    if p >= end:
        return INVALID, 0
    if buf[p] == 44:
        return _ws(buf, p + 1, end), 0
    if buf[p] == 93:
        return p + 1, 1
    return INVALID, 0


@njit(cache=True)
def _open(buf, p, end, ch):
    """At a value that must be `ch` ({ or [) or null: (position after it, 1 opened / 0 null / 2 empty), or error."""
    if p >= end:
        return INVALID, 0
    c = buf[p]
    if c == 110:
        q, v = _literal(buf, p, end)
        if q < 0:
            return q, 0
        return q, 0
    if c != ch:
        if c == 34 or c == 45 or 48 <= c <= 57 or c == 116 or c == 102 or c == 123 or c == 91:
            return FALLBACK, 0  # another JSON type where the schema has this one
        return INVALID, 0
    q = _ws(buf, p + 1, end)
    if q < end and buf[q] == (125 if ch == 123 else 93):
        return q + 1, 2
    return q, 1


@njit(cache=True)
def _text(buf, p, end, ints):
    """A string (or, with `ints`, a plain integer) or null: (position, kind, start, end), or (error, 0, 0, 0)."""
    if p >= end:
        return INVALID, 0, 0, 0
    c = buf[p]
    if c == 34:
        q, esc = _string(buf, p, end)
        if q < 0:
            return q, 0, 0, 0
        return q, K_ESCAPED if esc else K_TEXT, p + 1, q - 1
    if c == 110:
        q, v = _literal(buf, p, end)
        if q < 0:
            return q, 0, 0, 0
        return q, K_SEENNULL, 0, 0
    if ints and (c == 45 or 48 <= c <= 57):
        q, kind = _number(buf, p, end)
        if q < 0:
            return q, 0, 0, 0
        if kind != 1:
            return FALLBACK, 0, 0, 0
        return q, K_TEXT, p, q
    if c == 45 or 48 <= c <= 57 or c == 116 or c == 102 or c == 123 or c == 91:
        return FALLBACK, 0, 0, 0
    return INVALID, 0, 0, 0


@njit(cache=True)
def _any_value(buf, p, end):
    """An AnyValue object (or null) -> (position, kind, start, end) of coalesce(stringValue, intValue, doubleValue,
    boolValue, arrayValue.values[1].stringValue, arrayValue.values[1].intValue), or (error, 0, 0, 0)."""
    p, st = _open(buf, p, end, 123)
    if p < 0:
        return p, 0, 0, 0
    # the best candidate so far, in coalesce order: sv 0, iv 1, dv 2, bv 3, arr sv 4, arr iv 5
    bk, bs, be, bp = K_SEENNULL, 0, 0, 6
    seen = 0
    if st == 1:
        while True:
            ks, ke, p = _member_key(buf, p, end)
            if ks < 0:
                return ks, 0, 0, 0
            slot = -1
            if _eq(buf, ks, ke, L_SV):
                slot = 0
            elif _eq(buf, ks, ke, L_IV):
                slot = 1
            elif _eq(buf, ks, ke, L_DV):
                slot = 2
            elif _eq(buf, ks, ke, L_BV):
                slot = 3
            elif _eq(buf, ks, ke, L_AV):
                slot = 4
            if slot >= 0:
                if seen & (1 << slot):
                    return FALLBACK, 0, 0, 0  # a duplicate field
                seen |= 1 << slot
            if slot == 0 or slot == 1:
                p, k, s, e = _text(buf, p, end, slot == 1)
                if p < 0:
                    return p, 0, 0, 0
                if k != K_SEENNULL and slot < bp:
                    bk, bs, be, bp = k, s, e, slot
            elif slot == 2:
                if p >= end:
                    return INVALID, 0, 0, 0
                c = buf[p]
                if c == 45 or 48 <= c <= 57:
                    q, kind = _number(buf, p, end)
                    if q < 0:
                        return q, 0, 0, 0
                    if kind == 2:
                        return FALLBACK, 0, 0, 0
                    if 2 < bp:
                        bk, bs, be, bp = K_DOUBLE, p, q, 2
                    p = q
                elif c == 110:
                    p, v = _literal(buf, p, end)
                    if p < 0:
                        return p, 0, 0, 0
                else:
                    return (FALLBACK if (c == 34 or c == 116 or c == 102 or c == 123 or c == 91) else INVALID), 0, 0, 0
            elif slot == 3:
                if p >= end:
                    return INVALID, 0, 0, 0
                c = buf[p]
                if c == 116 or c == 102 or c == 110:
                    q, v = _literal(buf, p, end)
                    if q < 0:
                        return q, 0, 0, 0
                    if v >= 0 and 3 < bp:  # the literal's own text is what DuckDB writes for the boolean
                        bk, bs, be, bp = K_TEXT, p, q, 3
                    p = q
                else:
                    return (
                        (FALLBACK if (c == 34 or c == 45 or c == 123 or c == 91 or 48 <= c <= 57) else INVALID),
                        0,
                        0,
                        0,
                    )
            elif slot == 4:
                p, st2 = _open(buf, p, end, 123)
                if p < 0:
                    return p, 0, 0, 0
                if st2 == 1:
                    seen_values = False
                    while True:
                        ks, ke, p = _member_key(buf, p, end)
                        if ks < 0:
                            return ks, 0, 0, 0
                        if _eq(buf, ks, ke, L_VALUES):
                            if seen_values:
                                return FALLBACK, 0, 0, 0
                            seen_values = True
                            p, st3 = _open(buf, p, end, 91)
                            if p < 0:
                                return p, 0, 0, 0
                            first = True
                            while st3 == 1:
                                # elements: null or {stringValue, intValue}; the first one counts
                                p, st4 = _open(buf, p, end, 123)
                                if p < 0:
                                    return p, 0, 0, 0
                                seen4 = 0
                                while st4 == 1:
                                    ks, ke, p = _member_key(buf, p, end)
                                    if ks < 0:
                                        return ks, 0, 0, 0
                                    if _eq(buf, ks, ke, L_SV) or _eq(buf, ks, ke, L_IV):
                                        j = 4 if _eq(buf, ks, ke, L_SV) else 5
                                        if seen4 & (1 << j):
                                            return FALLBACK, 0, 0, 0
                                        seen4 |= 1 << j
                                        p, k, s, e = _text(buf, p, end, j == 5)
                                        if p < 0:
                                            return p, 0, 0, 0
                                        if first and k != K_SEENNULL and j < bp:
                                            bk, bs, be, bp = k, s, e, j
                                    else:
                                        p = _skip(buf, p, end)
                                        if p < 0:
                                            return p, 0, 0, 0
                                    p, done = _after_member(buf, p, end)
                                    if p < 0:
                                        return p, 0, 0, 0
                                    if done:
                                        break
                                first = False
                                p, done = _after_element(buf, p, end)
                                if p < 0:
                                    return p, 0, 0, 0
                                if done:
                                    break
                        else:
                            p = _skip(buf, p, end)
                            if p < 0:
                                return p, 0, 0, 0
                        p, done = _after_member(buf, p, end)
                        if p < 0:
                            return p, 0, 0, 0
                        if done:
                            break
            else:
                p = _skip(buf, p, end)
                if p < 0:
                    return p, 0, 0, 0
            p, done = _after_member(buf, p, end)
            if p < 0:
                return p, 0, 0, 0
            if done:
                break
    return p, bk, bs, be


@njit(cache=True)
def _match_key(buf, s, e, keys, key_off, order, by_len):
    """The index of the key buf[s:e] among the wanted keys, or -1. Keys are sorted by length: by_len[L] is the
    first of those L bytes long (lengths of 255 and more share the last bucket)."""
    n = e - s
    b = n if n < 255 else 255
    for t in range(by_len[b], by_len[b + 1]):
        a = key_off[t]
        if key_off[t + 1] - a != n:
            continue
        same = True
        for i in range(n):
            if buf[s + i] != keys[a + i]:
                same = False
                break
        if same:
            return order[t]
    return -1


@njit(cache=True)
def _attributes(buf, p, end, keys, key_off, order, by_len, dest, row):
    """An attribute list (or null) -> dest[j, row] = [kind, start, end] of the first attribute of each key."""
    p, st = _open(buf, p, end, 91)
    if p < 0:
        return p
    while st == 1:
        p, st2 = _open(buf, p, end, 123)
        if p < 0:
            return p
        ks_, ke_ = -1, -1
        have_value = False
        seen = 0
        vk, vs, ve = K_SEENNULL, 0, 0
        while st2 == 1:
            ks, ke, p = _member_key(buf, p, end)
            if ks < 0:
                return ks
            if _eq(buf, ks, ke, L_KEY):
                if seen & 1:
                    return FALLBACK
                seen |= 1
                p, k, s, e = _text(buf, p, end, False)
                if p < 0:
                    return p
                if k == K_ESCAPED:
                    return FALLBACK
                if k == K_TEXT:
                    ks_, ke_ = s, e
            elif _eq(buf, ks, ke, L_VALUE):
                if seen & 2:
                    return FALLBACK
                seen |= 2
                p, vk, vs, ve = _any_value(buf, p, end)
                if p < 0:
                    return p
                have_value = True
            else:
                p = _skip(buf, p, end)
                if p < 0:
                    return p
            p, done = _after_member(buf, p, end)
            if p < 0:
                return p
            if done:
                break
        if ks_ >= 0:
            j = _match_key(buf, ks_, ke_, keys, key_off, order, by_len)
            if j >= 0 and dest[j, row, 0] == K_UNSEEN:
                if have_value:
                    dest[j, row, 0], dest[j, row, 1], dest[j, row, 2] = vk, vs, ve
                else:
                    dest[j, row, 0] = K_SEENNULL
        p, done = _after_element(buf, p, end)
        if p < 0:
            return p
        if done:
            break
    return p


@njit(cache=True)
def _new_row(rows, fix, kv, state, line, rs):
    r = state[0]
    if r >= rows.shape[0]:
        return -1
    state[0] = r + 1
    rows[r, 0], rows[r, 1], rows[r, 2], rows[r, 3] = line, 1, rs, 0
    for f in range(NF):
        fix[f, r, 0] = K_UNSEEN
    for j in range(kv.shape[0]):
        kv[j, r, 0] = K_UNSEEN
    return r


@njit(cache=True)
def _span(buf, p, end, keys, key_off, order, by_len, rows, fix, kv, state, line, rs):
    """A span object (or null) -> one row."""
    r = _new_row(rows, fix, kv, state, line, rs)
    if r < 0:
        return FULL
    p, st = _open(buf, p, end, 123)
    if p < 0:
        return p
    seen = 0
    while st == 1:
        ks, ke, p = _member_key(buf, p, end)
        if ks < 0:
            return ks
        f = -1
        if _eq(buf, ks, ke, L_TRACE):
            f = F_TRACE
        elif _eq(buf, ks, ke, L_SPANID):
            f = F_SPAN
        elif _eq(buf, ks, ke, L_PARENT):
            f = F_PARENT
        elif _eq(buf, ks, ke, L_NAME):
            f = F_NAME
        elif _eq(buf, ks, ke, L_START):
            f = F_START
        elif _eq(buf, ks, ke, L_END):
            f = F_END
        elif _eq(buf, ks, ke, L_STATUS):
            f = F_STATUS
        elif _eq(buf, ks, ke, L_ATTRIBUTES):
            f = NF
        if f >= 0:
            if seen & (1 << f):
                return FALLBACK
            seen |= 1 << f
        if f == NF:
            p = _attributes(buf, p, end, keys, key_off, order, by_len, kv, r)
        elif f == F_STATUS:
            p, st2 = _open(buf, p, end, 123)
            seen2 = False
            while p >= 0 and st2 == 1:
                ks, ke, p = _member_key(buf, p, end)
                if ks < 0:
                    return ks
                if _eq(buf, ks, ke, L_CODE):
                    if seen2:
                        return FALLBACK
                    seen2 = True
                    p, k, s, e = _text(buf, p, end, True)
                    if p >= 0:
                        fix[F_STATUS, r, 0], fix[F_STATUS, r, 1], fix[F_STATUS, r, 2] = k, s, e
                else:
                    p = _skip(buf, p, end)
                if p < 0:
                    return p
                p, done = _after_member(buf, p, end)
                if p < 0:
                    return p
                if done:
                    break
        elif f >= 0:
            p, k, s, e = _text(buf, p, end, f == F_START or f == F_END)
            if p >= 0:
                fix[f, r, 0], fix[f, r, 1], fix[f, r, 2] = k, s, e
        else:
            p = _skip(buf, p, end)
        if p < 0:
            return p
        p, done = _after_member(buf, p, end)
        if p < 0:
            return p
        if done:
            break
    return p


@njit(cache=True)
def _scope_spans(buf, p, end, keys, key_off, order, by_len, rows, fix, kv, state, line, rs):
    """A scopeSpans element (or null) -> its span rows (one placeholder row when it has none)."""
    first = state[0]
    p, st = _open(buf, p, end, 123)
    if p < 0:
        return p
    scope_k, scope_s, scope_e = K_UNSEEN, 0, 0
    seen = 0
    while st == 1:
        ks, ke, p = _member_key(buf, p, end)
        if ks < 0:
            return ks
        if _eq(buf, ks, ke, L_SCOPE):
            if seen & 1:
                return FALLBACK
            seen |= 1
            p, st2 = _open(buf, p, end, 123)
            seen2 = False
            while p >= 0 and st2 == 1:
                ks, ke, p = _member_key(buf, p, end)
                if ks < 0:
                    return ks
                if _eq(buf, ks, ke, L_NAME):
                    if seen2:
                        return FALLBACK
                    seen2 = True
                    p, scope_k, scope_s, scope_e = _text(buf, p, end, False)
                else:
                    p = _skip(buf, p, end)
                if p < 0:
                    return p
                p, done = _after_member(buf, p, end)
                if p < 0:
                    return p
                if done:
                    break
        elif _eq(buf, ks, ke, L_SPANS):
            if seen & 2:
                return FALLBACK
            seen |= 2
            p, st2 = _open(buf, p, end, 91)
            while p >= 0 and st2 == 1:
                p = _span(buf, p, end, keys, key_off, order, by_len, rows, fix, kv, state, line, rs)
                if p < 0:
                    return p
                p, done = _after_element(buf, p, end)
                if p < 0:
                    return p
                if done:
                    break
        else:
            p = _skip(buf, p, end)
        if p < 0:
            return p
        p, done = _after_member(buf, p, end)
        if p < 0:
            return p
        if done:
            break
    if state[0] == first and _new_row(rows, fix, kv, state, line, rs) < 0:
        return FULL
    for r in range(first, state[0]):
        fix[F_SCOPE, r, 0], fix[F_SCOPE, r, 1], fix[F_SCOPE, r, 2] = scope_k, scope_s, scope_e
    return p


@njit(cache=True)
def _resource_spans(buf, p, end, keys, key_off, order, by_len, rows, fix, kv, res, state, line):
    """A resourceSpans element (or null) -> its rows; its resource's attribute values go to res[:, rs]."""
    first = state[0]
    rs = state[1]
    if rs >= res.shape[1]:
        return FULL
    state[1] = rs + 1
    for j in range(res.shape[0]):
        res[j, rs, 0] = K_UNSEEN
    p, st = _open(buf, p, end, 123)
    if p < 0:
        return p
    if st != 1:  # null or {}: a row without a resource (DuckDB's unnest of a NULL struct)
        if _new_row(rows, fix, kv, state, line, -1) < 0:
            return FULL
        return p
    seen = 0
    while True:
        ks, ke, p = _member_key(buf, p, end)
        if ks < 0:
            return ks
        if _eq(buf, ks, ke, L_RESOURCE):
            if seen & 1:
                return FALLBACK
            seen |= 1
            p, st2 = _open(buf, p, end, 123)
            seen2 = False
            while p >= 0 and st2 == 1:
                ks, ke, p = _member_key(buf, p, end)
                if ks < 0:
                    return ks
                if _eq(buf, ks, ke, L_ATTRIBUTES):
                    if seen2:
                        return FALLBACK
                    seen2 = True
                    p = _attributes(buf, p, end, keys, key_off, order, by_len, res, rs)
                else:
                    p = _skip(buf, p, end)
                if p < 0:
                    return p
                p, done = _after_member(buf, p, end)
                if p < 0:
                    return p
                if done:
                    break
        elif _eq(buf, ks, ke, L_SCOPE_SPANS):
            if seen & 2:
                return FALLBACK
            seen |= 2
            p, st2 = _open(buf, p, end, 91)
            while p >= 0 and st2 == 1:
                p = _scope_spans(buf, p, end, keys, key_off, order, by_len, rows, fix, kv, state, line, rs)
                if p < 0:
                    return p
                p, done = _after_element(buf, p, end)
                if p < 0:
                    return p
                if done:
                    break
        else:
            p = _skip(buf, p, end)
        if p < 0:
            return p
        p, done = _after_member(buf, p, end)
        if p < 0:
            return p
        if done:
            break
    if state[0] == first and _new_row(rows, fix, kv, state, line, rs) < 0:
        return FULL
    return p


@njit(cache=True)
def _request(buf, p, end, keys, key_off, order, by_len, rows, fix, kv, res, state, line):
    """One line: an ExportTraceServiceRequest -> its rows (one placeholder when it has no spans)."""
    first = state[0]
    p = _ws(buf, p, end)
    if p >= end:
        return INVALID
    if buf[p] != 123:
        q = _skip(buf, p, end)
        if q < 0:
            return q
        q = _ws(buf, q, end)
        return FALLBACK if (q == end or buf[q] == 10) else INVALID  # valid JSON but not an object
    p, st = _open(buf, p, end, 123)
    seen = False
    while p >= 0 and st == 1:
        ks, ke, p = _member_key(buf, p, end)
        if ks < 0:
            return ks
        if _eq(buf, ks, ke, L_RESOURCE_SPANS):
            if seen:
                return FALLBACK
            seen = True
            p, st2 = _open(buf, p, end, 91)
            while p >= 0 and st2 == 1:
                p = _resource_spans(buf, p, end, keys, key_off, order, by_len, rows, fix, kv, res, state, line)
                if p < 0:
                    return p
                p, done = _after_element(buf, p, end)
                if p < 0:
                    return p
                if done:
                    break
        else:
            p = _skip(buf, p, end)
        if p < 0:
            return p
        p, done = _after_member(buf, p, end)
        if p < 0:
            return p
        if done:
            break
    if p < 0:
        return p
    p = _ws(buf, p, end)
    if p != end and buf[p] != 10:
        return INVALID  # something after the object
    if state[0] == first and _new_row(rows, fix, kv, state, line, -1) < 0:
        return FULL
    return p


@njit(cache=True, nogil=True)
def scan(buf, keys, key_off, order, by_len, rows, fix, kv, res, state, invalid):
    """Scan the whole lines of `buf`. rows[r] = [line index in buf, parsed (1) or not (0), resource index or
    -1, blank (1)]; fix[f, r] and kv[j, r] = [kind, start, end]; res[j, rs] likewise for resource attributes.
    state = [rows, resources, lines, invalid lines]; invalid[i] = index of an unparsable line. Returns OK,
    FALLBACK or FULL."""
    n = buf.shape[0]
    p = 0
    line = 0
    state[0] = 0
    state[1] = 0
    state[3] = 0
    while p < n:
        if buf[p] == 10:  # a blank line: one NULL row
            r = _new_row(rows, fix, kv, state, line, -1)
            if r < 0:
                return FULL
            rows[r, 3] = 1
            eol = p
        else:
            # The parse never crosses a newline (not whitespace in a line, not allowed raw in a string): it ends
            # at the line's end, or fails; only then is the line's end looked for.
            r0, s0 = state[0], state[1]
            eol = _request(buf, p, n, keys, key_off, order, by_len, rows, fix, kv, res, state, line)
            if eol == FULL or eol == FALLBACK:
                return eol
            if eol == INVALID:
                state[0], state[1] = r0, s0
                r = _new_row(rows, fix, kv, state, line, -1)
                if r < 0:
                    return FULL
                rows[r, 1] = 0
                i = state[3]
                if i < invalid.shape[0]:
                    invalid[i] = line
                state[3] = i + 1
                eol = p
                while eol < n and buf[eol] != 10:
                    eol += 1
        line += 1
        p = eol + 1
    state[2] = line
    return OK


@njit(cache=True, nogil=True)
def gather(buf, rows, fix, kv, res, from_resource):
    """Arrow string buffers of every column of the scanned rows: the fixed columns, then one per key (a key of
    `from_resource` falls back to the resource's value when the span has none). Returns offsets[c] (n + 1
    offsets into the one shared data buffer), valid[c], kinds[c] (K_TEXT, K_ESCAPED, K_DOUBLE) and data."""
    n = rows.shape[0]
    nk = kv.shape[0]
    nc = NF + nk
    offsets = np.zeros((nc, n + 1), dtype=np.int64)
    valid = np.zeros((nc, n), dtype=np.bool_)
    kinds = np.zeros((nc, n), dtype=np.uint8)
    total = 0
    for c in range(nc):
        offsets[c, 0] = total
        for i in range(n):
            if c < NF:
                k, s, e = fix[c, i, 0], fix[c, i, 1], fix[c, i, 2]
            else:
                j = c - NF
                k, s, e = kv[j, i, 0], kv[j, i, 1], kv[j, i, 2]
                if not (k == K_TEXT or k == K_ESCAPED or k == K_DOUBLE) and from_resource[j] and rows[i, 2] >= 0:
                    r = rows[i, 2]
                    k, s, e = res[j, r, 0], res[j, r, 1], res[j, r, 2]
            if k == K_TEXT or k == K_ESCAPED or k == K_DOUBLE:
                total += e - s
                valid[c, i] = True
                kinds[c, i] = k
            offsets[c, i + 1] = total
    data = np.empty(total, dtype=np.uint8)
    o = 0
    for c in range(nc):
        for i in range(n):
            if valid[c, i]:
                if c < NF:
                    s, e = fix[c, i, 1], fix[c, i, 2]
                else:
                    j = c - NF
                    s, e = kv[j, i, 1], kv[j, i, 2]
                    k = kv[j, i, 0]
                    if not (k == K_TEXT or k == K_ESCAPED or k == K_DOUBLE):
                        r = rows[i, 2]
                        s, e = res[j, r, 1], res[j, r, 2]
                for t in range(e - s):
                    data[o + t] = buf[s + t]
                o += e - s
    return offsets, valid, kinds, data
