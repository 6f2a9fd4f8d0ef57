# cython: annotation_typing=False
"""Token-bucket math as GCRA in exact integer microseconds.

This file is the single source of both twins. ``_bucket_c.py`` is a symlink to
it that Cython compiles with the C types declared in ``_bucket_c.pxd`` (the
aiohttp ``reader_py.py`` / ``reader_c.pxd`` pattern), so the twins agree by
construction. Keep every ``//`` and ``%`` on non-negative operands: C and
Python disagree on negative division and setup.py compiles with cdivision.

Model
-----
A bucket holds at most ``capacity`` tokens and refills the whole capacity in
``period_us`` microseconds (RPM 600 is ``capacity=600, period_us=60_000_000``;
TPM 200k is ``capacity=200_000, period_us=60_000_000``): one token every
``T = period_us / capacity`` µs, an exact rational that is never rounded.

State is the pair ``(tat_us, tat_frac)``: the GCRA *theoretical arrival time*
``TAT = tat_us + tat_frac / capacity`` µs (``0 <= tat_frac < capacity``), the
instant at which the bucket is full again. At time ``now`` it holds
``capacity - (TAT - now) / T`` tokens, capped at ``capacity`` (``TAT <= now``
is a full bucket). ``FULL_STATE == (0, 0)``, so a missing Redis key is a full
bucket. There is no stored "last seen" time: tokens derive from ``TAT - now``
alone, so a clock that goes backwards only ever shows *fewer* tokens and can
never mint any. Nothing accumulates but ``TAT``, kept exactly, so there is no
drift however many calls are made. If ``capacity`` changes while a state is
stored, ``tat_frac >= capacity`` is carried into ``tat_us`` (an error below
1 µs).

Operations (all times and durations are integer µs, token counts integers):

``take(state, now_us, capacity, period_us, n)``
    -> ``(allowed, new_state, remaining, retry_after_us, reset_us)``.
    Reserves ``n`` tokens if that many are available at ``now_us``. If not,
    the state is returned unchanged and ``retry_after_us`` is the exact wait
    (rounded up to whole µs) until ``n`` tokens are available; it is 0 when
    allowed and ``NEVER`` (-1) when ``n > capacity``. ``remaining`` is whole
    tokens left after the call, clamped at 0 while in debt; ``reset_us`` is the
    time until the bucket is full again (rounded up). ``take(..., n=0)`` is a
    read-only peek: allowed unless the bucket is in debt.
``settle(state, now_us, capacity, period_us, reserved, actual)``
    -> ``(new_state, remaining)``. Refunds ``reserved - actual`` tokens if
    positive (never above capacity), charges ``actual - reserved`` if positive.
    A charge is never refused: it may push the bucket into *debt* (negative
    tokens, ``TAT > now + period_us``), and takes then wait until the debt and
    the new request have refilled.
``refill(state, now_us, capacity, period_us)`` -> the state at ``now_us``
    (``TAT`` raised to ``now_us`` if the bucket is full; otherwise unchanged).

Ranges and errors
-----------------
``1 <= capacity <= MAX_CAPACITY`` (2**40 - 1, about 1.1e12 tokens),
``1 <= period_us <= MAX_PERIOD_US`` (2**40 - 1 µs, about 12.7 days),
``0 <= now_us <= MAX_TIME_US`` (2**52 µs after the epoch: the year 2112),
``0 <= n, reserved, actual <= MAX_AMOUNT`` (2**53 - 1),
``0 <= tat_us <= MAX_TAT_US`` (2**53 - 2**42) and ``0 <= tat_frac <= 2**53 - 1``.
Outside them: ``ValueError``; a non-int (``bool`` included) or a state that is
not a pair: ``TypeError``. A charge whose debt would put ``tat_us`` beyond
``MAX_TAT_US`` raises ``ValueError`` rather than wrap.

Every value, intermediate included, stays below 2**53, so the same math runs
exactly in Redis Lua 5.1 (doubles) and in int64 C. The only products that
could exceed it, ``n * period_us / capacity`` and ``dt * capacity / period_us``,
go through ``_muldiv``: long multiplication in 12-bit digits of the first
operand, each step below ``2 * 2**40 * 2**12 = 2**53``. In Lua, extract digits
with ``math.floor(b / 2^shift) % 4096`` (exact for powers of two), and correct
``q = math.floor(x / d)`` with ``r = x - q * d`` (if ``r < 0``: ``q - 1``; if
``r >= d``: ``q + 1``), because a double quotient may round up to the next
integer. ``tests/data/bucket_vectors.json`` holds the shared vectors.
"""

from __future__ import annotations

from types import FunctionType

__all__ = (
    "FULL_STATE",
    "IMPLEMENTATION",
    "MAX_AMOUNT",
    "MAX_CAPACITY",
    "MAX_PERIOD_US",
    "MAX_TAT_US",
    "MAX_TIME_US",
    "NEVER",
    "refill",
    "settle",
    "take",
)

MAX_CAPACITY = (1 << 40) - 1
MAX_PERIOD_US = (1 << 40) - 1
MAX_TIME_US = 1 << 52
MAX_TAT_US = (1 << 53) - (1 << 42)
MAX_AMOUNT = (1 << 53) - 1
NEVER = -1
FULL_STATE = (0, 0)

# Private copies that the compiled twin holds as int64 (declared in the .pxd).
_MAX_SAFE = (1 << 53) - 1
_MAX_CAP = (1 << 40) - 1
_MAX_PERIOD = (1 << 40) - 1
_MAX_TIME = 1 << 52
_MAX_TAT = (1 << 53) - (1 << 42)


def _probe() -> None:
    """A plain function here, a cyfunction once compiled."""


IMPLEMENTATION = "py" if type(_probe) is FunctionType else "c"


def _int(x: object, name: str, lo: int, hi: int) -> int:
    """``x`` as an int in ``[lo, hi]``, else TypeError / ValueError."""
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    try:
        v = x  # the compiled twin converts to int64 here
    except OverflowError:  # pragma: no cover  (compiled twin only)
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {x}") from None
    if v < lo or v > hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {x}")
    return v


def _muldiv(b: int, a: int, d: int) -> tuple[int, int]:
    """``(a * b // d, a * b % d)`` with no intermediate reaching 2**53.

    Needs ``0 <= b <= 2**53 - 1`` and ``1 <= a, d <= 2**40 - 1``. Returns
    ``(-1, 0)`` when the quotient would exceed ``2**53 - 1``.
    """
    if b <= _MAX_SAFE // a:  # the product itself is small enough
        x = a * b
        return x // d, x % d
    # Long multiplication over the 12-bit digits of b, most significant first.
    # Invariant: a * (digits so far) == q * d + r, with r < d < 2**40, so
    # r * 4096 + a * digit < 2**52 + 2**52.
    q = 0
    r = 0
    shift = 48
    while shift >= 0:
        x = r * 4096 + a * ((b >> shift) & 4095)
        hi = x // d
        if q > (_MAX_SAFE - hi) >> 12:
            return -1, 0
        q = q * 4096 + hi
        r = x % d
        shift -= 12
    return q, r


def _load(state: object, c: int) -> tuple[int, int]:
    """Validate a stored ``(tat_us, tat_frac)`` and carry ``tat_frac >= c``."""
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError("state must be a (tat_us, tat_frac) pair")
    tu = _int(state[0], "state tat_us", 0, _MAX_TAT)
    tf = _int(state[1], "state tat_frac", 0, _MAX_SAFE)
    if tf >= c:  # written under a smaller capacity
        tu += tf // c
        tf = tf % c
        if tu > _MAX_TAT:
            raise ValueError(f"state tat_us must be in [0, {_MAX_TAT}] after carrying tat_frac")
    return tu, tf


def _tokens(su: int, sf: int, now: int, c: int, p: int) -> int:
    """Whole tokens at ``now`` for ``TAT = su + sf/c >= now``, clamped at 0."""
    du = now + p - su
    if du <= 0:  # TAT - now >= period: empty or in debt
        return 0
    # tokens * p == du * c - sf == (du - 1) * c + (c - sf), all terms >= 0
    q, r = _muldiv(du - 1, c, p)
    return q + (r + c - sf) // p


def take(
    state: tuple[int, int] | list[int],
    now_us: int,
    capacity: int,
    period_us: int,
    n: int,
) -> tuple[bool, tuple[int, int], int, int, int]:
    """Reserve ``n`` tokens at ``now_us`` if available (see the module docstring)."""
    c = _int(capacity, "capacity", 1, _MAX_CAP)
    p = _int(period_us, "period_us", 1, _MAX_PERIOD)
    now = _int(now_us, "now_us", 0, _MAX_TIME)
    k = _int(n, "n", 0, _MAX_SAFE)
    tu, tf = _load(state, c)
    # base = max(TAT, now): a full bucket stays full, it does not bank tokens
    if tu < now:
        bu = now
        bf = 0
    else:
        bu = tu
        bf = tf
    if k > c:
        return (False, (tu, tf), _tokens(bu, bf, now, c, p), NEVER, bu - now + (1 if bf else 0))
    q, r = _muldiv(k, p, c)  # n * T, at most period_us since n <= capacity
    nu = bu + q
    nf = bf + r
    if nf >= c:
        nf -= c
        nu += 1
    wait = nu + (1 if nf else 0) - now - p  # ceil(new TAT) - (now + period)
    if wait > 0:
        return (False, (tu, tf), _tokens(bu, bf, now, c, p), wait, bu - now + (1 if bf else 0))
    return (True, (nu, nf), _tokens(nu, nf, now, c, p), 0, nu - now + (1 if nf else 0))


def settle(
    state: tuple[int, int] | list[int],
    now_us: int,
    capacity: int,
    period_us: int,
    reserved: int,
    actual: int,
) -> tuple[tuple[int, int], int]:
    """Correct a reservation of ``reserved`` tokens to the ``actual`` use."""
    c = _int(capacity, "capacity", 1, _MAX_CAP)
    p = _int(period_us, "period_us", 1, _MAX_PERIOD)
    now = _int(now_us, "now_us", 0, _MAX_TIME)
    res = _int(reserved, "reserved", 0, _MAX_SAFE)
    act = _int(actual, "actual", 0, _MAX_SAFE)
    tu, tf = _load(state, c)
    if tu < now:
        nu = now
        nf = 0
    else:
        nu = tu
        nf = tf
    if act > res:  # charge the overrun, possibly into debt
        q, r = _muldiv(act - res, p, c)
        carry = 1 if nf + r >= c else 0
        if q < 0 or q > _MAX_TAT - nu - carry:
            raise ValueError(
                f"settle: charging {act - res} tokens would put the bucket's debt beyond "
                f"MAX_TAT_US ({_MAX_TAT} µs)"
            )
        nu += q + carry
        nf += r - carry * c
    elif res > act:  # refund the unused part, never above capacity
        q, r = _muldiv(res - act, p, c)
        if q < 0 or q > nu:  # a refund of more time than there is: full
            nu = now
            nf = 0
        else:
            nu -= q
            nf -= r
            if nf < 0:
                nf += c
                nu -= 1
            if nu < now:
                nu = now
                nf = 0
    return (nu, nf), _tokens(nu, nf, now, c, p)


def refill(
    state: tuple[int, int] | list[int],
    now_us: int,
    capacity: int,
    period_us: int,
) -> tuple[int, int]:
    """The state at ``now_us``: ``TAT`` raised to ``now_us`` when the bucket is full."""
    c = _int(capacity, "capacity", 1, _MAX_CAP)
    _int(period_us, "period_us", 1, _MAX_PERIOD)
    now = _int(now_us, "now_us", 0, _MAX_TIME)
    tu, tf = _load(state, c)
    if tu < now:
        return (now, 0)
    return (tu, tf)
