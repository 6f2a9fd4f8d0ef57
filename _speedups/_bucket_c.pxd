# C types for _bucket_c.py, a symlink to _bucket_py.py (one source, two twins).
# Every value stays below 2**54 (see the _bucket_py docstring), so int64 never overflows.
cimport cython
from libc.stdint cimport int64_t

cdef int64_t _MAX_SAFE, _MAX_CAP, _MAX_PERIOD, _MAX_TIME, _MAX_TAT

@cython.locals(v=int64_t)
cdef int64_t _int(object x, str name, int64_t lo, int64_t hi) except? -1

@cython.locals(x=int64_t, hi=int64_t, q=int64_t, r=int64_t, shift=int)
cdef (int64_t, int64_t) _muldiv(int64_t b, int64_t a, int64_t d) noexcept

@cython.locals(tu=int64_t, tf=int64_t)
cdef (int64_t, int64_t) _load(object state, int64_t c) except *

@cython.locals(du=int64_t, q=int64_t, r=int64_t)
cdef int64_t _tokens(int64_t su, int64_t sf, int64_t now, int64_t c, int64_t p) noexcept

@cython.locals(
    c=int64_t, p=int64_t, now=int64_t, k=int64_t, tu=int64_t, tf=int64_t,
    bu=int64_t, bf=int64_t, q=int64_t, r=int64_t, nu=int64_t, nf=int64_t, wait=int64_t,
)
cpdef tuple take(object state, object now_us, object capacity, object period_us, object n)

@cython.locals(
    c=int64_t, p=int64_t, now=int64_t, res=int64_t, act=int64_t, tu=int64_t, tf=int64_t,
    q=int64_t, r=int64_t, nu=int64_t, nf=int64_t, carry=int64_t,
)
cpdef tuple settle(
    object state, object now_us, object capacity, object period_us, object reserved, object actual
)

@cython.locals(c=int64_t, now=int64_t, tu=int64_t, tf=int64_t)
cpdef tuple refill(object state, object now_us, object capacity, object period_us)
