# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Exact BPE token counts for OpenAI's ``cl100k_base`` and ``o200k_base``: Cython twin.

Same contract as ``_tokens_py`` (read its docstring), different machinery, all in C:

* the text's UTF-8 (the str's own buffer when it is ASCII) is scanned once by a hand
  written pre-tokenizer per pattern that follows tiktoken's regex alternation by
  alternation (comments below quote each one), classifying code points with the shipped
  table (``_tokens_data.class_table()``: one byte per code point);
* each piece is looked up in an open-addressing hash table built from the shipped rank
  blob (no Python objects per piece): a byte array of 7-bit tags answers most misses,
  16-byte slots hold tokens of up to 12 bytes inline, and 2-byte strings index a direct
  65536-entry table;
* a piece that is not one token runs tiktoken's merge loop (lowest rank, leftmost on
  ties) over small arrays, or over a heap and a linked list when it is longer than
  ``SMALL`` bytes; a direct-mapped cache remembers the counts of recent such pieces.

Memory per encoding once loaded: the blob (0.6 / 1.4 MB), offsets, the slots (4 / 8 MB),
tags, the pair table (256 KB) and the piece cache (256 KB). Texts of ``NOGIL_MIN`` bytes
or more are counted without the GIL.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_GET_LENGTH
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memmove

from . import _tokens_data

cdef extern from "Python.h":
    int PyUnicode_READY(object o) except -1
    int PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)

IMPLEMENTATION = "c"
ENCODINGS = _tokens_data.ENCODINGS

cdef extern from *:
    """
    enum {CLS_OTHER, CLS_LU, CLS_LL, CLS_LMO, CLS_M, CLS_N, CLS_WS};
    #define NO_RANK 0xFFFFFFFFu
    #define SMALL 64          /* merge pieces up to this many bytes in stack arrays */
    #define NOGIL_MIN 4096    /* release the GIL for texts of at least this many bytes */
    #define CACHE_BITS 11     /* piece cache: 2048 entries per encoding, direct mapped */
    #define CACHE_PIECE 112   /* longest piece (bytes) the cache remembers */
    #if defined(_MSC_VER)
    #include <intrin.h>
    static int gw_try_lock(volatile long* l) { return _InterlockedExchange(l, 1) == 0; }
    static void gw_unlock(volatile long* l) { _InterlockedExchange(l, 0); }
    #else
    static int gw_try_lock(volatile long* l) { return __atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE) == 0; }
    static void gw_unlock(volatile long* l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }
    #endif
    #define M_LETTER ((1 << CLS_LU) | (1 << CLS_LL) | (1 << CLS_LMO))  /* \\p{L} */
    #define M_UPPER ((1 << CLS_LU) | (1 << CLS_LMO) | (1 << CLS_M))    /* Lu Lt Lm Lo M */
    #define M_LOWER ((1 << CLS_LL) | (1 << CLS_LMO) | (1 << CLS_M))    /* Ll Lm Lo M */
    #define M_PUNCT ((1 << CLS_OTHER) | (1 << CLS_M))  /* [^\\s\\p{L}\\p{N}] */
    """
    enum:
        CLS_OTHER
        CLS_LU
        CLS_LL
        CLS_LMO
        CLS_M
        CLS_N
        CLS_WS
        SMALL
        NOGIL_MIN
        CACHE_BITS
        CACHE_PIECE
        M_LETTER
        M_UPPER
        M_LOWER
        M_PUNCT
    const uint32_t NO_RANK
    int gw_try_lock(volatile long* lock) nogil
    void gw_unlock(volatile long* lock) nogil


ctypedef struct CacheEntry:
    uint64_t hash
    uint32_t length
    uint32_t count
    uint8_t data[CACHE_PIECE]


ctypedef struct Slot:
    uint64_t k0  # token bytes 0..7, zero padded
    uint32_t k1  # token bytes 8..11, zero padded
    uint32_t meta  # (rank + 1) << 8 | length; 0 = empty


ctypedef struct Table:
    uint32_t n
    const uint8_t* blob
    uint32_t* offs  # n + 1 offsets into blob, by rank
    Slot* slots  # open addressing, linear probing; tokens up to 12 bytes compare in the slot
    # One byte per slot, 0 = empty, else 0x80 | 7 bits of the hash: most lookups of absent
    # strings (common while merging) end in this small array without touching ``slots``.
    uint8_t* tags
    uint64_t mask
    uint32_t* pair2  # rank of each 2-byte token by its two bytes, or NO_RANK
    # Counts of recent pieces that needed merging (words repeat). Whoever holds cache_lock
    # for a whole _count call may use it; a call that finds it taken runs without it.
    CacheEntry* cache
    volatile long cache_lock


ctypedef struct HeapItem:
    uint32_t rank
    Py_ssize_t pos


cdef Table _tables[2]
cdef bint _ready[2]
cdef const uint8_t* _ctab = NULL  # class of each code point 0..0x10FFFF
_keep = {}  # Python objects whose buffers the C tables point into


# --- the rank table ------------------------------------------------------------------------


cdef inline uint64_t _load_le(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """``p[:n]`` (0 <= n <= 8) as a little-endian integer, reading only inside ``p[:n]``."""
    cdef uint32_t lo, hi
    cdef uint64_t w
    if n >= 8:
        memcpy(&w, p, 8)
        return w
    if n >= 4:
        memcpy(&lo, p, 4)
        memcpy(&hi, p + n - 4, 4)
        return <uint64_t>lo | (<uint64_t>hi << ((n - 4) * 8))
    if n == 0:
        return 0
    return <uint64_t>p[0] | (<uint64_t>p[n >> 1] << ((n >> 1) * 8)) | (<uint64_t>p[n - 1] << ((n - 1) * 8))


cdef inline uint64_t _mix(uint64_t h) noexcept nogil:
    h ^= h >> 32
    h *= 0xD6E8FEB86659FD93ULL
    h ^= h >> 32
    return h


cdef inline uint64_t _hash(const uint8_t* p, Py_ssize_t n, uint64_t k0, uint64_t k1) noexcept nogil:
    """Hash of ``p[:n]`` whose first 12 bytes are ``k0``, ``k1`` (see _keys)."""
    cdef uint64_t h = (k0 ^ 0x9E3779B97F4A7C15ULL) * 0xFF51AFD7ED558CCDULL
    cdef uint64_t w
    cdef Py_ssize_t i = 12
    h = _mix(h ^ (k1 | (<uint64_t>n << 32))) * 0xC4CEB9FE1A85EC53ULL
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        h = _mix(h ^ w) * 0xFF51AFD7ED558CCDULL
        i += 8
    if i < n:
        h = _mix(h ^ _load_le(p + i, n - i)) * 0xC4CEB9FE1A85EC53ULL
    return _mix(h)


cdef inline void _keys(const uint8_t* p, Py_ssize_t n, uint64_t* k0, uint64_t* k1) noexcept nogil:
    cdef uint32_t w
    if n <= 8:
        k0[0] = _load_le(p, n)
        k1[0] = 0
    else:
        memcpy(k0, p, 8)
        if n >= 12:
            memcpy(&w, p + 8, 4)
            k1[0] = w
        else:
            k1[0] = _load_le(p + 8, n - 8)


cdef inline uint32_t _find(
    const Table* t, const uint8_t* p, Py_ssize_t n, uint64_t k0, uint64_t k1, uint64_t h
) noexcept nogil:
    cdef uint64_t i = h & t.mask
    cdef uint8_t tag = <uint8_t>((h >> 57) | 0x80)
    cdef uint8_t got
    cdef const Slot* slot
    cdef uint32_t meta = <uint32_t>n
    cdef uint32_t r
    while True:
        got = t.tags[i]
        if got == 0:
            return NO_RANK
        if got == tag:
            slot = &t.slots[i]
            if (slot.meta & 0xFF) == meta and slot.k0 == k0 and slot.k1 == k1:
                r = (slot.meta >> 8) - 1
                if n <= 12 or memcmp(t.blob + t.offs[r] + 12, p + 12, n - 12) == 0:
                    return r
        i = (i + 1) & t.mask


cdef inline uint32_t _rank(const Table* t, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Rank of the token ``p[:n]`` (n >= 2), or NO_RANK."""
    cdef uint64_t k0, k1
    if n == 2:
        return t.pair2[p[0] | (<uint32_t>p[1] << 8)]
    _keys(p, n, &k0, &k1)
    return _find(t, p, n, k0, k1, _hash(p, n, k0, k1))


cdef int _build(Table* t, uint32_t n, const uint8_t* lengths, const uint8_t* blob) except -1:
    cdef uint64_t cap = 1, i, k0, k1, h
    cdef uint32_t r, off = 0, length
    cdef const uint8_t* p
    while cap < 2 * <uint64_t>n:
        cap <<= 1
    t.offs = <uint32_t*>malloc((n + 1) * sizeof(uint32_t))
    t.slots = <Slot*>calloc(cap, sizeof(Slot))
    t.tags = <uint8_t*>calloc(cap, 1)
    t.pair2 = <uint32_t*>malloc(65536 * sizeof(uint32_t))
    t.cache = <CacheEntry*>calloc(1 << CACHE_BITS, sizeof(CacheEntry))
    t.cache_lock = 0
    if t.offs == NULL or t.slots == NULL or t.tags == NULL or t.pair2 == NULL or t.cache == NULL:
        free(t.offs)
        free(t.slots)
        free(t.tags)
        free(t.pair2)
        free(t.cache)
        raise MemoryError()
    t.n = n
    t.blob = blob
    t.mask = cap - 1
    for i in range(65536):
        t.pair2[i] = NO_RANK
    for r in range(n):
        t.offs[r] = off
        off += lengths[r]
    t.offs[n] = off
    for r in range(n):
        p = blob + t.offs[r]
        length = lengths[r]
        if length == 2:
            t.pair2[p[0] | (<uint32_t>p[1] << 8)] = r
        _keys(p, length, &k0, &k1)
        h = _hash(p, length, k0, k1)
        i = h & t.mask
        while t.tags[i] != 0:
            i = (i + 1) & t.mask
        t.tags[i] = <uint8_t>((h >> 57) | 0x80)
        t.slots[i].k0 = k0
        t.slots[i].k1 = <uint32_t>k1
        t.slots[i].meta = ((r + 1) << 8) | length
    return 0


cdef int _load(int idx) except -1:
    global _ctab
    cdef Table t
    if _ctab == NULL:
        table = _tokens_data.class_table()  # the same object on every call
        _keep["classes"] = table
        _ctab = <const uint8_t*>PyBytes_AS_STRING(table)
    name = ENCODINGS[idx]
    n, lengths, blob = _tokens_data.raw_ranks(name)
    if _ready[idx]:  # another thread finished while we read the file
        return 0
    _build(&t, n, <const uint8_t*>PyBytes_AS_STRING(lengths), <const uint8_t*>PyBytes_AS_STRING(blob))
    _keep[name] = blob
    _tables[idx] = t
    _ready[idx] = True
    return 0


# --- BPE merges ----------------------------------------------------------------------------


cdef Py_ssize_t _merge_small(const Table* t, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """tiktoken's merge loop (lowest rank, leftmost on ties) for 2 <= n <= SMALL."""
    cdef Py_ssize_t start[SMALL + 1]
    cdef uint32_t rank[SMALL + 1]
    cdef Py_ssize_t m = n + 1, i, best_i
    cdef uint32_t best
    for i in range(n - 1):
        start[i] = i
        rank[i] = _rank(t, p + i, 2)
    start[n - 1] = n - 1
    rank[n - 1] = NO_RANK
    start[n] = n
    rank[n] = NO_RANK
    while True:
        best = NO_RANK
        best_i = 0
        for i in range(m - 1):
            if rank[i] < best:
                best = rank[i]
                best_i = i
        if best == NO_RANK:
            break
        i = best_i
        if i > 0:
            rank[i - 1] = (
                _rank(t, p + start[i - 1], start[i + 2] - start[i - 1]) if i + 2 < m else NO_RANK
            )
        rank[i] = _rank(t, p + start[i], start[i + 3] - start[i]) if i + 3 < m else NO_RANK
        memmove(&start[i + 1], &start[i + 2], (m - i - 2) * sizeof(Py_ssize_t))
        memmove(&rank[i + 1], &rank[i + 2], (m - i - 2) * sizeof(uint32_t))
        m -= 1
    return m - 1


cdef inline bint _before(HeapItem a, HeapItem b) noexcept nogil:
    return a.rank < b.rank or (a.rank == b.rank and a.pos < b.pos)


cdef inline void _push(HeapItem* heap, Py_ssize_t* size, uint32_t rank, Py_ssize_t pos) noexcept nogil:
    cdef Py_ssize_t i = size[0], parent
    cdef HeapItem item
    item.rank = rank
    item.pos = pos
    size[0] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(item, heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item


cdef inline HeapItem _pop(HeapItem* heap, Py_ssize_t* size) noexcept nogil:
    cdef HeapItem top = heap[0], last
    cdef Py_ssize_t i = 0, child, n
    size[0] -= 1
    n = size[0]
    last = heap[n]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and _before(heap[child + 1], heap[child]):
            child += 1
        if not _before(heap[child], last):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = last
    return top


cdef Py_ssize_t _merge_heap(const Table* t, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Same merges as _merge_small with a heap and a linked list; -1 when out of memory."""
    cdef Py_ssize_t* nxt = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* prv = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
    cdef uint32_t* cur = <uint32_t*>malloc((n + 1) * sizeof(uint32_t))
    cdef HeapItem* heap = <HeapItem*>malloc((3 * n + 1) * sizeof(HeapItem))
    cdef Py_ssize_t size = 0, parts = n, i, j, k, h
    cdef HeapItem top
    if nxt == NULL or prv == NULL or cur == NULL or heap == NULL:
        parts = -1
    else:
        for i in range(n):
            nxt[i] = i + 1
            prv[i] = i - 1
            cur[i] = _rank(t, p + i, 2) if i + 1 < n else NO_RANK
            if cur[i] != NO_RANK:
                _push(heap, &size, cur[i], i)
        while size:
            top = _pop(heap, &size)
            i = top.pos
            if cur[i] != top.rank:  # stale
                continue
            j = nxt[i]
            k = nxt[j]
            cur[j] = NO_RANK
            nxt[i] = k
            if k < n:
                prv[k] = i
                cur[i] = _rank(t, p + i, nxt[k] - i)
                if cur[i] != NO_RANK:
                    _push(heap, &size, cur[i], i)
            else:
                cur[i] = NO_RANK
            h = prv[i]
            if h >= 0:
                cur[h] = _rank(t, p + h, k - h)
                if cur[h] != NO_RANK:
                    _push(heap, &size, cur[h], h)
            parts -= 1
    free(nxt)
    free(prv)
    free(cur)
    free(heap)
    return parts


cdef inline Py_ssize_t _merge(const Table* t, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    if n <= SMALL:
        return _merge_small(t, p, n)
    return _merge_heap(t, p, n)


cdef inline Py_ssize_t _piece(Table* t, const uint8_t* p, Py_ssize_t n, bint cached) noexcept nogil:
    """Tokens in the piece ``p[:n]``; -1 when out of memory."""
    cdef uint64_t h, k0, k1
    cdef CacheEntry* e
    cdef Py_ssize_t got
    if n == 1:
        return 1
    if n == 2:
        return 1 if t.pair2[p[0] | (<uint32_t>p[1] << 8)] != NO_RANK else 2
    _keys(p, n, &k0, &k1)
    h = _hash(p, n, k0, k1)
    if _find(t, p, n, k0, k1, h) != NO_RANK:
        return 1
    if not cached or n > CACHE_PIECE:
        return _merge(t, p, n)
    e = &t.cache[(h >> 17) & ((1 << CACHE_BITS) - 1)]
    if e.hash == h and e.length == n and memcmp(e.data, p, n) == 0:
        return e.count
    got = _merge(t, p, n)
    e.hash = h
    e.length = <uint32_t>n
    e.count = <uint32_t>got
    memcpy(e.data, p, n)
    return got


# --- pre-tokenization ----------------------------------------------------------------------


cdef inline Py_ssize_t _dec(const uint8_t* s, Py_ssize_t i, uint32_t* cp) noexcept nogil:
    """Decode the (valid) UTF-8 character at ``s[i]``; return the index after it."""
    cdef uint32_t c = s[i]
    if c < 0x80:
        cp[0] = c
        return i + 1
    if c < 0xE0:
        cp[0] = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F)
        return i + 2
    if c < 0xF0:
        cp[0] = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F)
        return i + 3
    cp[0] = (
        ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F)
    )
    return i + 4


cdef inline int _is(uint8_t cls, int mask) noexcept nogil:
    return (mask >> cls) & 1


cdef inline Py_ssize_t _run(
    const uint8_t* s, Py_ssize_t i, Py_ssize_t n, const uint8_t* ct, int mask
) noexcept nogil:
    """End of the run of characters in ``mask`` classes starting at ``i``."""
    cdef uint32_t c
    cdef Py_ssize_t k
    while i < n:
        if s[i] < 0x80:
            if not _is(ct[s[i]], mask):
                break
            i += 1
        else:
            k = _dec(s, i, &c)
            if not _is(ct[c], mask):
                break
            i = k
    return i


cdef inline Py_ssize_t _contraction(const uint8_t* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """End of ``'(?i:[sdmt]|ll|ve|re)`` at ``i``, or -1 (s also folds to U+017F)."""
    cdef uint8_t a, b
    if i + 1 >= n or s[i] != 39:
        return -1
    a = s[i + 1] | 0x20 if s[i + 1] < 0x80 else 0
    if a == 115 or a == 100 or a == 109 or a == 116:  # s d m t
        return i + 2
    if s[i + 1] == 0xC5 and i + 2 < n and s[i + 2] == 0xBF:  # U+017F LATIN SMALL LETTER LONG S
        return i + 3
    if i + 2 >= n or s[i + 2] >= 0x80:
        return -1
    b = s[i + 2] | 0x20
    if (a == 108 and b == 108) or ((a == 118 or a == 114) and b == 101):  # ll ve re
        return i + 3
    return -1


cdef Py_ssize_t _whitespace(
    const uint8_t* s, Py_ssize_t i, Py_ssize_t j, Py_ssize_t n, const uint8_t* ct, bint cl100k
) noexcept nogil:
    """The whitespace alternatives at ``i`` (a \\s character ending at ``j``)."""
    cdef Py_ssize_t e = j, k, last_nl = -1, last = i
    cdef uint32_t c
    if s[i] == 10 or s[i] == 13:
        last_nl = j
    while e < n:
        k = _dec(s, e, &c)
        if ct[c] != CLS_WS:
            break
        if c == 10 or c == 13:
            last_nl = k
        last = e
        e = k
    if cl100k:
        if e == n:  # \s++$
            return n
        if last_nl >= 0:  # \s*[\r\n]
            return last_nl
    else:
        if last_nl >= 0:  # \s*[\r\n]+
            return last_nl
        if e == n:  # \s+(?!\S) at the end
            return n
    if last > i:  # \s+(?!\S): the run but its last character
        return last
    return j  # \s  (o200k: \s+, a single character here)


cdef inline Py_ssize_t _digits(const uint8_t* s, Py_ssize_t j, Py_ssize_t n, const uint8_t* ct) noexcept nogil:
    """\\p{N}{1,3} whose first character ends at ``j``."""
    cdef uint32_t c
    cdef Py_ssize_t k
    cdef int count = 1
    while count < 3 and j < n:
        k = _dec(s, j, &c)
        if ct[c] != CLS_N:
            break
        j = k
        count += 1
    return j


cdef Py_ssize_t _next_cl100k(const uint8_t* s, Py_ssize_t i, Py_ssize_t n, const uint8_t* ct) noexcept nogil:
    cdef uint32_t c0, c1
    cdef Py_ssize_t j, k, e
    cdef uint8_t k0
    # '(?i:[sdmt]|ll|ve|re)
    if s[i] == 39:
        e = _contraction(s, i, n)
        if e >= 0:
            return e
    j = _dec(s, i, &c0)
    k0 = ct[c0]
    # [^\r\n\p{L}\p{N}]?+\p{L}++
    if _is(k0, M_LETTER):
        return _run(s, j, n, ct, M_LETTER)
    if k0 != CLS_N and c0 != 10 and c0 != 13 and j < n:
        k = _dec(s, j, &c1)
        if _is(ct[c1], M_LETTER):
            return _run(s, k, n, ct, M_LETTER)
    # \p{N}{1,3}+
    if k0 == CLS_N:
        return _digits(s, j, n, ct)
    #  ?[^\s\p{L}\p{N}]++[\r\n]*+
    e = -1
    if _is(k0, M_PUNCT):
        e = _run(s, j, n, ct, M_PUNCT)
    elif c0 == 32 and j < n:
        k = _dec(s, j, &c1)
        if _is(ct[c1], M_PUNCT):
            e = _run(s, k, n, ct, M_PUNCT)
    if e >= 0:
        while e < n and (s[e] == 10 or s[e] == 13):
            e += 1
        return e
    # \s++$ | \s*[\r\n] | \s+(?!\S) | \s
    return _whitespace(s, i, j, n, ct, True)


cdef inline Py_ssize_t _word1(const uint8_t* s, Py_ssize_t i, Py_ssize_t n, const uint8_t* ct) noexcept nogil:
    """[U]*[W]+ at ``i`` (U = Lu Lt Lm Lo M, W = Ll Lm Lo M), or -1."""
    cdef uint32_t c
    cdef Py_ssize_t k, last_both_end = -1
    cdef uint8_t cls
    while i < n:
        k = _dec(s, i, &c)
        cls = ct[c]
        if not _is(cls, M_UPPER):
            if cls == CLS_LL:
                return _run(s, k, n, ct, M_LOWER)
            break
        if cls != CLS_LU:
            last_both_end = k
        i = k
    # U* backtracks to the last character that is also in W: W+ takes just that one.
    return last_both_end


cdef inline Py_ssize_t _word2(const uint8_t* s, Py_ssize_t i, Py_ssize_t n, const uint8_t* ct) noexcept nogil:
    """[U]+[W]* at ``i``, or -1."""
    cdef Py_ssize_t e = _run(s, i, n, ct, M_UPPER)
    if e == i:
        return -1
    return _run(s, e, n, ct, M_LOWER)


cdef Py_ssize_t _next_o200k(const uint8_t* s, Py_ssize_t i, Py_ssize_t n, const uint8_t* ct) noexcept nogil:
    cdef uint32_t c0, c1
    cdef Py_ssize_t j, k, e
    cdef uint8_t k0
    cdef bint prefix
    j = _dec(s, i, &c0)
    k0 = ct[c0]
    # [^\r\n\p{L}\p{N}]?[U]*[W]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
    # [^\r\n\p{L}\p{N}]?[U]+[W]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
    # Order of attempts: first with the optional prefix, then without, for each.
    prefix = c0 != 10 and c0 != 13 and not _is(k0, M_LETTER) and k0 != CLS_N and j < n
    e = -1
    if prefix:
        e = _word1(s, j, n, ct)
    if e < 0 and _is(k0, M_UPPER | M_LOWER):
        e = _word1(s, i, n, ct)
    if e < 0 and prefix:
        e = _word2(s, j, n, ct)
    if e < 0 and _is(k0, M_UPPER):
        e = _word2(s, i, n, ct)
    if e >= 0:
        k = _contraction(s, e, n)
        return k if k >= 0 else e
    # \p{N}{1,3}
    if k0 == CLS_N:
        return _digits(s, j, n, ct)
    #  ?[^\s\p{L}\p{N}]+[\r\n/]*
    if _is(k0, M_PUNCT):
        e = _run(s, j, n, ct, M_PUNCT)
    elif c0 == 32 and j < n:
        k = _dec(s, j, &c1)
        if _is(ct[c1], M_PUNCT):
            e = _run(s, k, n, ct, M_PUNCT)
    if e >= 0:
        while e < n and (s[e] == 10 or s[e] == 13 or s[e] == 47):
            e += 1
        return e
    # \s*[\r\n]+ | \s+(?!\S) | \s+
    return _whitespace(s, i, j, n, ct, False)


cdef Py_ssize_t _count(Table* t, const uint8_t* s, Py_ssize_t n, bint cl100k) noexcept nogil:
    """Token count of UTF-8 ``s[:n]``, or -1 when out of memory."""
    cdef const uint8_t* ct = _ctab
    cdef Py_ssize_t i = 0, e, total = 0, got
    cdef bint cached = gw_try_lock(&t.cache_lock)
    while i < n:
        e = _next_cl100k(s, i, n, ct) if cl100k else _next_o200k(s, i, n, ct)
        got = _piece(t, s + i, e - i, cached)
        if got < 0:
            total = -1
            break
        total += got
        i = e
    if cached:
        gw_unlock(&t.cache_lock)
    return total


# --- entry point ---------------------------------------------------------------------------


def count_tokens(text, encoding):
    """``len(enc.encode_ordinary(text))`` for tiktoken encoding ``encoding``."""
    cdef int idx
    cdef const uint8_t* s
    cdef Py_ssize_t n, got
    cdef bytes data
    if encoding == "o200k_base":
        idx = 1
    elif encoding == "cl100k_base":
        idx = 0
    else:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if not _ready[idx]:
        _load(idx)
    PyUnicode_READY(text)  # legacy (pre-PEP 393) strings; a no-op since Python 3.12
    if PyUnicode_IS_ASCII(text):
        s = <const uint8_t*>PyUnicode_DATA(text)
        n = PyUnicode_GET_LENGTH(text)
    else:
        try:
            data = PyUnicode_AsUTF8String(text)
        except UnicodeEncodeError:  # surrogates: tiktoken's own fix-up
            data = str.encode(text, "utf-16", "surrogatepass").decode("utf-16", "replace").encode()
        s = <const uint8_t*>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    if n >= NOGIL_MIN:
        with nogil:
            got = _count(&_tables[idx], s, n, idx == 0)
    else:
        got = _count(&_tables[idx], s, n, idx == 0)
    if got < 0:
        raise MemoryError()
    return got
