# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, auto_pickle=False
"""Response-cache key, Cython twin of ``_cachekey_py`` (read its docstring for the spec).

The canonical encoding is written into one growing C buffer and hashed once
by ``hashlib.sha256`` through a read-only memoryview, without a copy. The walk
is iterative: a fixed array of ``MAX_DEPTH`` frames, no C recursion. Each open
object's (key, value) pairs are collected with ``PyDict_Next`` into one shared
stack-like array, as strong references, and sorted there (insertion sort for
small objects, merge sort beyond, comparing ASCII keys with ``memcmp``); ASCII
strings are copied straight from their compact storage. The constants that
define the encoding come from the pure twin, so there is one source for them;
the differential tests keep the code honest.
"""

import hashlib

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from cpython.unicode cimport PyUnicode_AsEncodedString
from libc.math cimport floor, isfinite
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

from ._cachekey_py import KINDS, MAGIC, MAX_DEPTH, TRANSPORT_FIELDS


cdef extern from "Python.h":
    # macros, declared on borrowed PyObject* to keep reference counting out of the hot loop
    bint _IS_ASCII "PyUnicode_IS_ASCII"(PyObject* o)
    void* _UDATA "PyUnicode_DATA"(PyObject* o)
    Py_ssize_t _ULEN "PyUnicode_GET_LENGTH"(PyObject* o)
    int _UCMP "PyUnicode_Compare"(PyObject* a, PyObject* b)
    Py_ssize_t _LIST_SIZE "PyList_GET_SIZE"(PyObject* o)
    PyObject* _LIST_ITEM "PyList_GET_ITEM"(PyObject* o, Py_ssize_t i)
    object PyMemoryView_FromMemory(char* mem, Py_ssize_t size, int flags)
    int PyBUF_READ
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1


__all__ = (
    "IMPLEMENTATION",
    "KINDS",
    "MAGIC",
    "MAX_DEPTH",
    "TRANSPORT_FIELDS",
    "cache_key",
    "canonical_encoding",
)

IMPLEMENTATION = "c"

cdef enum:
    _MAX_DEPTH = 128
    _INITIAL = 4096

if MAX_DEPTH != _MAX_DEPTH:  # pragma: no cover
    raise ImportError("_cachekey_c was built for another MAX_DEPTH; rebuild it")

cdef bytes _MAGIC = MAGIC
cdef frozenset _TRANSPORT = TRANSPORT_FIELDS
cdef frozenset _KINDS = KINDS
cdef object _sha256 = hashlib.sha256


cdef struct Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef struct Pair:
    PyObject* key
    PyObject* value


cdef struct Frame:
    PyObject* array  # a JSON array being walked (a strong reference), or NULL for an object
    Py_ssize_t start  # an object: index of its first (key, value) in Walk.pairs
    Py_ssize_t n  # an object: number of pairs
    Py_ssize_t i  # next item or pair


cdef struct Walk:
    # Open containers, innermost last. Objects keep their sorted (key, value)
    # pairs, as strong references, in one stack-like array shared by all
    # frames: a frame's pairs sit above its parent's and go when it closes.
    Buf buf
    Pair* pairs
    Py_ssize_t npairs
    Py_ssize_t cap
    int depth
    Frame frames[_MAX_DEPTH]


# --- the output buffer ---------------------------------------------------------------------

cdef int _grow(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef char* p
    if cap < b.size + extra:
        cap = b.size + extra
    p = <char*>realloc(b.data, cap)
    if p == NULL:
        raise MemoryError()
    b.data = p
    b.cap = cap
    return 0


cdef inline char* _room(Buf* b, Py_ssize_t n) except NULL:
    """Reserve n bytes at the end and return where they start."""
    if b.size + n > b.cap:
        _grow(b, n)
    cdef char* p = b.data + b.size
    b.size += n
    return p


cdef int _too_large(Py_ssize_t n) except -1:
    raise ValueError(f"a string or container of {n} bytes or items is too large to key")


cdef inline int _head(Buf* b, char tag, Py_ssize_t n) except -1:
    if n > 0xFFFFFFFF:
        _too_large(n)
    cdef char* p = _room(b, 5)
    p[0] = tag
    p[1] = <char>((n >> 24) & 0xFF)
    p[2] = <char>((n >> 16) & 0xFF)
    p[3] = <char>((n >> 8) & 0xFF)
    p[4] = <char>(n & 0xFF)
    return 0


cdef inline int _put(Buf* b, const char* s, Py_ssize_t n) except -1:
    memcpy(_room(b, n), s, n)
    return 0


# --- leaves --------------------------------------------------------------------------------

cdef int _put_str(Buf* b, PyObject* s) except -1:
    cdef Py_ssize_t n
    cdef bytes data
    if _IS_ASCII(s):  # compact ASCII storage is already UTF-8
        n = _ULEN(s)
        _head(b, b"S", n)
        return _put(b, <const char*>_UDATA(s), n)
    data = PyUnicode_AsEncodedString(<object>s, "utf-8", "surrogatepass")
    n = PyBytes_GET_SIZE(data)
    _head(b, b"S", n)
    return _put(b, PyBytes_AS_STRING(data), n)


cdef int _put_i64(Buf* b, int64_t v) except -1:
    # size = |v|.bit_length() // 8 + 1: the smallest size with |v| < 2**(8*size - 1)
    cdef uint64_t mag = <uint64_t>v if v >= 0 else (~(<uint64_t>v)) + 1
    cdef uint64_t bits = <uint64_t>v
    cdef int size = 1
    cdef int low, i
    cdef char* p
    while size < 9 and (mag >> (8 * size - 1)) != 0:
        size += 1
    _head(b, b"I", size)
    p = _room(b, size)
    low = size
    if size == 9:  # only -2**63: a sign byte, then 8 bytes of two's complement
        p[0] = <char>0xFF
        p += 1
        low = 8
    for i in range(low):
        p[i] = <char>((bits >> (8 * (low - 1 - i))) & 0xFF)
    return 0


cdef int _put_bigint(Buf* b, object x) except -1:
    cdef Py_ssize_t size = (x.bit_length() >> 3) + 1
    cdef bytes data = x.to_bytes(size, "big", signed=True)
    _head(b, b"I", size)
    return _put(b, PyBytes_AS_STRING(data), size)


cdef int _put_int(Buf* b, object x) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(x, &overflow)
    if overflow:
        return _put_bigint(b, x)
    return _put_i64(b, v)


cdef int _put_float(Buf* b, object x) except -1:
    cdef double d = PyFloat_AS_DOUBLE(x)
    cdef uint64_t bits
    cdef char* p
    cdef int i
    if not isfinite(d):
        raise ValueError(f"non-finite float {x!r} is not JSON")
    if d == floor(d):  # integral: hash as the integer it equals (-0.0 -> 0)
        if -9223372036854775808.0 <= d < 9223372036854775808.0:
            return _put_i64(b, <int64_t>d)
        return _put_bigint(b, int(x))
    memcpy(&bits, &d, 8)
    p = _room(b, 9)
    p[0] = b"D"
    for i in range(8):
        p[1 + i] = <char>((bits >> (8 * (7 - i))) & 0xFF)
    return 0


# --- sorting an object's pairs by key ------------------------------------------------------

cdef inline int _cmp(PyObject* a, PyObject* b) noexcept:
    """Code point order of two exact str (PyUnicode_Compare cannot fail on them)."""
    cdef Py_ssize_t la, lb
    cdef int r
    if _IS_ASCII(a) and _IS_ASCII(b):
        la = _ULEN(a)
        lb = _ULEN(b)
        r = memcmp(_UDATA(a), _UDATA(b), la if la < lb else lb)
        if r != 0:
            return r
        return (la > lb) - (la < lb)
    return _UCMP(a, b)


cdef int _sort_pairs(Pair* p, Py_ssize_t n) except -1:
    """Keys are distinct, so stability does not matter. Insertion sort for the
    usual handful of keys, bottom-up merge sort (O(n log n)) beyond."""
    cdef Py_ssize_t i, j, width, lo, mid, hi, a, c, k
    cdef Pair x
    cdef Pair* tmp
    cdef Pair* src
    cdef Pair* dst
    cdef Pair* swap
    if n <= 16:
        for i in range(1, n):
            x = p[i]
            j = i
            while j > 0 and _cmp(p[j - 1].key, x.key) > 0:
                p[j] = p[j - 1]
                j -= 1
            p[j] = x
        return 0
    tmp = <Pair*>malloc(n * sizeof(Pair))
    if tmp == NULL:
        raise MemoryError()
    src = p
    dst = tmp
    width = 1
    while width < n:
        lo = 0
        while lo < n:
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            a = lo
            c = mid
            k = lo
            while a < mid and c < hi:
                if _cmp(src[c].key, src[a].key) < 0:
                    dst[k] = src[c]
                    c += 1
                else:
                    dst[k] = src[a]
                    a += 1
                k += 1
            while a < mid:
                dst[k] = src[a]
                a += 1
                k += 1
            while c < hi:
                dst[k] = src[c]
                c += 1
                k += 1
            lo += 2 * width
        swap = src
        src = dst
        dst = swap
        width *= 2
    if src != p:
        memcpy(p, src, n * sizeof(Pair))
    free(tmp)
    return 0


# --- the walk ------------------------------------------------------------------------------

cdef int _open_object(Walk* w, object d, bint top) except -1:
    """Push a frame for dict d: its pairs, sorted by key (filtered at the top level)."""
    cdef Py_ssize_t n = len(<dict>d)
    cdef Py_ssize_t start = w.npairs
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef Pair* grown
    cdef Frame* f
    if w.npairs + n > w.cap:
        grown = <Pair*>realloc(w.pairs, (w.npairs + n + w.cap) * sizeof(Pair))
        if grown == NULL:
            raise MemoryError()
        w.pairs = grown
        w.cap = w.npairs + n + w.cap
    while PyDict_Next(d, &pos, &k, &v):
        if type(<object>k) is not str:
            raise TypeError(f"dict keys must be str, got {type(<object>k).__name__}")
        if top and (v == <PyObject*>None or <object>k in _TRANSPORT):
            continue
        if w.npairs == start + n:  # pragma: no cover  (the dict grew under us)
            raise RuntimeError("the request changed while it was being keyed")
        Py_XINCREF(k)
        Py_XINCREF(v)
        w.pairs[w.npairs].key = k
        w.pairs[w.npairs].value = v
        w.npairs += 1
    _sort_pairs(w.pairs + start, w.npairs - start)
    _head(&w.buf, b"M", w.npairs - start)
    f = &w.frames[w.depth]
    f.array = NULL
    f.start = start
    f.n = w.npairs - start
    f.i = 0
    w.depth += 1
    return 0


cdef int _open_array(Walk* w, object lst) except -1:
    cdef Frame* f = &w.frames[w.depth]
    _head(&w.buf, b"L", len(<list>lst))
    Py_XINCREF(<PyObject*>lst)
    f.array = <PyObject*>lst
    f.i = 0
    w.depth += 1
    return 0


cdef int _walk(Walk* w) except -1:
    """Write every open container to the end, iteratively, leaves as they come."""
    cdef Frame* f
    cdef Pair* pair
    cdef Py_ssize_t j
    cdef object value
    while w.depth > 0:
        f = &w.frames[w.depth - 1]
        if f.array != NULL:
            if f.i >= _LIST_SIZE(f.array):  # array done
                Py_XDECREF(f.array)
                f.array = NULL
                w.depth -= 1
                continue
            value = <object>_LIST_ITEM(f.array, f.i)
            f.i += 1
        else:
            if f.i >= f.n:  # object done: release its pairs
                for j in range(f.start, f.start + f.n):
                    Py_XDECREF(w.pairs[j].key)
                    Py_XDECREF(w.pairs[j].value)
                w.npairs = f.start
                w.depth -= 1
                continue
            pair = &w.pairs[f.start + f.i]
            f.i += 1
            _put_str(&w.buf, pair.key)
            value = <object>pair.value
        t = type(value)
        if t is str:
            _put_str(&w.buf, <PyObject*>value)
        elif t is dict:
            if w.depth >= _MAX_DEPTH:
                raise ValueError(f"request nests deeper than {MAX_DEPTH} levels")
            _open_object(w, value, False)
        elif t is list:
            if w.depth >= _MAX_DEPTH:
                raise ValueError(f"request nests deeper than {MAX_DEPTH} levels")
            _open_array(w, value)
        elif t is int:
            _put_int(&w.buf, value)
        elif t is float:
            _put_float(&w.buf, value)
        elif value is None:
            _put(&w.buf, b"N", 1)
        elif value is True:
            _put(&w.buf, b"T", 1)
        elif value is False:
            _put(&w.buf, b"F", 1)
        else:
            raise TypeError(f"{t.__name__} is not a JSON type")
    return 0


cdef void _release(Walk* w) noexcept:
    cdef Py_ssize_t j
    cdef int d
    for d in range(w.depth):
        Py_XDECREF(w.frames[d].array)
    for j in range(w.npairs):
        Py_XDECREF(w.pairs[j].key)
        Py_XDECREF(w.pairs[j].value)
    free(w.pairs)
    free(w.buf.data)


cdef int _material(Walk* w, object tenant, object kind, object request) except -1:
    if type(tenant) is not str:
        raise TypeError(f"tenant must be str, got {type(tenant).__name__}")
    if not tenant:
        raise ValueError("tenant must not be empty")
    if type(kind) is not str:
        raise TypeError(f"kind must be str, got {type(kind).__name__}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if type(request) is not dict:
        raise TypeError(f"request must be a dict, got {type(request).__name__}")
    w.buf.data = <char*>malloc(_INITIAL)
    if w.buf.data == NULL:
        raise MemoryError()
    w.buf.cap = _INITIAL
    _put(&w.buf, PyBytes_AS_STRING(_MAGIC), PyBytes_GET_SIZE(_MAGIC))
    _put_str(&w.buf, <PyObject*>tenant)
    _put_str(&w.buf, <PyObject*>kind)
    _open_object(w, request, True)
    return _walk(w)


cdef inline void _init(Walk* w) noexcept:
    w.buf.data = NULL
    w.buf.size = 0
    w.buf.cap = 0
    w.pairs = NULL
    w.npairs = 0
    w.cap = 0
    w.depth = 0


def canonical_encoding(tenant, kind, request):
    """The exact bytes ``cache_key`` hashes (see ``_cachekey_py``)."""
    cdef Walk w
    _init(&w)
    try:
        _material(&w, tenant, kind, request)
        return PyBytes_FromStringAndSize(w.buf.data, w.buf.size)
    finally:
        _release(&w)


def cache_key(tenant, kind, request):
    """Hex SHA-256 of the canonical request; the caller keys ``gw:{tenant}:cache:<digest>``."""
    cdef Walk w
    _init(&w)
    try:
        _material(&w, tenant, kind, request)
        view = PyMemoryView_FromMemory(w.buf.data, w.buf.size, PyBUF_READ)
        try:
            return _sha256(view).hexdigest()
        finally:
            view.release()
    finally:
        _release(&w)
