# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, auto_pickle=False
"""Server-sent events decoder, Cython twin of ``_sse_py`` (same rules, same results).

Bytes are scanned with ``memchr`` over C pointers; a line that spans chunks
is kept in a C buffer that never holds a line end, so no byte is scanned
twice. ``data:`` values are gathered as raw bytes and decoded once per
event (line ends are ASCII, so this equals decoding the whole stream).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint64_t, UINT64_MAX
from libc.string cimport memchr, memcmp, memcpy


cdef extern from "Python.h":
    str PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)


IMPLEMENTATION = "c"

cdef str _MESSAGE = "message"
cdef Py_ssize_t _SHRINK_ABOVE = 64 * 1024  # give memory back after an unusually long line
cdef Py_ssize_t _EVENT_CACHE_MAX = 256


cdef struct Buf:
    unsigned char *p
    Py_ssize_t len
    Py_ssize_t cap


cdef int _grow(Buf *b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap = b.cap if b.cap else 256
    cdef void *q
    while cap < need:
        if cap > (<Py_ssize_t>1 << 60):
            cap = need
            break
        cap *= 2
    q = PyMem_Realloc(b.p, <size_t>cap)
    if q == NULL:
        raise MemoryError()
    b.p = <unsigned char *>q
    b.cap = cap
    return 0


cdef inline int _append(Buf *b, const unsigned char *s, Py_ssize_t n) except -1:
    if b.len + n > b.cap:
        _grow(b, n)
    if n:
        memcpy(b.p + b.len, s, <size_t>n)
        b.len += n
    return 0


cdef inline void _reset(Buf *b) noexcept:
    b.len = 0
    if b.cap > _SHRINK_ABOVE:
        PyMem_Free(b.p)
        b.p = NULL
        b.cap = 0


cdef inline str _decode(const unsigned char *s, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(<const char *>s, n, b"replace")


cdef class SSEDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the events it completed.

    Each event is ``(event_type, data, last_event_id)``. ``last_event_id`` is
    the stream's last event ID string: it persists across events and is
    updated at every blank line, as the spec says.
    """

    cdef Buf _buf        # partial line: bytes after the last line end
    cdef Buf _data       # data buffer: each value followed by LF, undecoded
    cdef Buf _evt        # event type buffer, undecoded
    cdef bytes _evt_key  # last event type decoded, and its text
    cdef str _evt_str
    cdef str _id_buf
    cdef readonly str last_event_id
    cdef uint64_t _retry
    cdef bint _has_retry
    cdef bint _skip_lf   # the last chunk ended with CR
    cdef int _bom        # BOM bytes matched at stream start; 3 once decided

    def __cinit__(self):
        self._buf.p = NULL
        self._buf.len = self._buf.cap = 0
        self._data.p = NULL
        self._data.len = self._data.cap = 0
        self._evt.p = NULL
        self._evt.len = self._evt.cap = 0
        self._id_buf = ""
        self.last_event_id = ""
        self._has_retry = False
        self._skip_lf = False
        self._bom = 0

    def __dealloc__(self):
        PyMem_Free(self._buf.p)
        PyMem_Free(self._data.p)
        PyMem_Free(self._evt.p)

    @property
    def retry(self):
        """The last valid ``retry:`` value in milliseconds, or None."""
        return self._retry if self._has_retry else None

    @property
    def buffered(self):
        """Bytes held waiting for a line end."""
        return self._buf.len

    def feed(self, chunk):
        cdef bytes b = chunk if type(chunk) is bytes else bytes(chunk)
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(b)
        cdef const unsigned char *end = p + PyBytes_GET_SIZE(b)
        cdef const unsigned char *lf
        cdef const unsigned char *cr
        cdef const unsigned char *eol
        cdef unsigned char want
        cdef list out = []

        if self._bom < 3:
            # Hold a possible BOM prefix in the line buffer until it is decided.
            # Its bytes carry no line end, so on a mismatch they simply stay as data.
            while self._bom < 3 and p < end:
                want = 0xEF if self._bom == 0 else (0xBB if self._bom == 1 else 0xBF)
                if p[0] != want:
                    break
                _append(&self._buf, p, 1)
                self._bom += 1
                p += 1
            if self._bom == 3:
                self._buf.len = 0
            elif p < end:
                self._bom = 3
            else:
                return out
        if p == end:
            return out
        if self._skip_lf:
            self._skip_lf = False
            if p[0] == 10:
                p += 1
                if p == end:
                    return out

        # Next LF and next CR at or after p (end if none); each found once.
        lf = <const unsigned char *>memchr(p, 10, <size_t>(end - p))
        if lf == NULL:
            lf = end
        cr = <const unsigned char *>memchr(p, 13, <size_t>(end - p))
        if cr == NULL:
            cr = end
        while True:
            if lf < p:
                lf = <const unsigned char *>memchr(p, 10, <size_t>(end - p))
                if lf == NULL:
                    lf = end
            if cr < p:
                cr = <const unsigned char *>memchr(p, 13, <size_t>(end - p))
                if cr == NULL:
                    cr = end
            eol = lf if lf < cr else cr
            if eol == end:
                break
            if self._buf.len:
                _append(&self._buf, p, eol - p)
                self._line(self._buf.p, self._buf.len, out)
                _reset(&self._buf)
            else:
                self._line(p, eol - p, out)
            p = eol + 1
            if eol[0] == 13:
                if p == end:
                    self._skip_lf = True
                elif p[0] == 10:
                    p += 1
        if p < end:
            _append(&self._buf, p, end - p)
        return out

    cdef int _line(self, const unsigned char *s, Py_ssize_t n, list out) except -1:
        cdef const unsigned char *colon
        cdef const unsigned char *v
        cdef Py_ssize_t flen, vlen, i
        cdef uint64_t val, d
        if n == 0:
            return self._dispatch(out)
        if s[0] == 58:  # ":" comment
            return 0
        colon = <const unsigned char *>memchr(s, 58, <size_t>n)
        if colon == NULL:
            flen = n
            v = s + n
            vlen = 0
        else:
            flen = colon - s
            v = colon + 1
            vlen = n - flen - 1
            if vlen and v[0] == 32:
                v += 1
                vlen -= 1
        if flen == 4:
            if memcmp(s, b"data", 4) == 0:
                if self._data.len + vlen + 1 > self._data.cap:
                    _grow(&self._data, vlen + 1)
                if vlen:
                    memcpy(self._data.p + self._data.len, v, <size_t>vlen)
                self._data.p[self._data.len + vlen] = 10
                self._data.len += vlen + 1
        elif flen == 5:
            if memcmp(s, b"event", 5) == 0:
                self._evt.len = 0
                _append(&self._evt, v, vlen)
            elif memcmp(s, b"retry", 5) == 0:
                if vlen == 0:
                    return 0
                val = 0
                for i in range(vlen):
                    d = v[i] - 48u
                    if d > 9:
                        return 0
                    if val > (UINT64_MAX - d) // 10:
                        return 0  # does not fit in 64 bits: ignored, as Chromium does
                    val = val * 10 + d
                self._retry = val
                self._has_retry = True
        elif flen == 2:
            if s[0] == 105 and s[1] == 100:  # "id"
                if vlen == 0:
                    self._id_buf = ""
                elif memchr(v, 0, <size_t>vlen) == NULL:
                    self._id_buf = _decode(v, vlen)
        return 0

    cdef int _dispatch(self, list out) except -1:
        cdef str data
        cdef str etype
        self.last_event_id = self._id_buf
        if self._data.len == 0:
            self._evt.len = 0
            return 0
        data = _decode(self._data.p, self._data.len - 1)
        if self._evt.len == 0:
            etype = _MESSAGE
        elif (
            self._evt_key is not None
            and PyBytes_GET_SIZE(self._evt_key) == self._evt.len
            and memcmp(PyBytes_AS_STRING(self._evt_key), self._evt.p, <size_t>self._evt.len) == 0
        ):
            etype = self._evt_str
        else:
            etype = _decode(self._evt.p, self._evt.len)
            if self._evt.len <= _EVENT_CACHE_MAX:
                self._evt_key = PyBytes_FromStringAndSize(<char *>self._evt.p, self._evt.len)
                self._evt_str = etype
        out.append((etype, data, self._id_buf))
        _reset(&self._data)
        _reset(&self._evt)
        return 0
