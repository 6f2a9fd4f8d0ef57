"""Response-cache key: SHA-256 over a canonical encoding of the request (pure-Python twin).

``cache_key(tenant, kind, request)`` returns the 64-char hex SHA-256 of
``canonical_encoding(tenant, kind, request)``. The caller builds the Redis key
``gw:{<tenant>}:cache:<digest>``; the ``{tenant}`` hash tag keeps one tenant's
keys in one Redis Cluster slot, and the tenant is also inside the hashed
material, length-prefixed, so two tenants can never share a digest.

``request`` is a JSON-decoded request body of its ``kind``: ``chat``
(``/v1/chat/completions``), ``embeddings``, ``messages`` (Anthropic's
``/v1/messages``) or ``responses``, as ``msgspec.json.decode`` produces it:
exact ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``.
Subclasses, tuples, bytes and the like raise ``TypeError``; so do non-``str``
dict keys. NaN and infinities raise ``ValueError``, as does nesting deeper
than ``MAX_DEPTH`` containers (the request object itself is level 1).

What counts as the same request
-------------------------------
Every field that can change the answer is hashed: model, messages (order
kept), tools, tool_choice, sampling parameters, response_format, seed, n,
stop, max tokens, logprobs, and any field this code does not know, because an
unknown field may change the answer too. Defaults are not filled in
(``"n": 1`` differs from no ``n``): a missed hit is cheap, a wrong hit is not.
Only the top level is filtered:

* ``TRANSPORT_FIELDS`` (``stream``, ``stream_options``, ``user``) are dropped:
  they change how the answer is delivered or attributed, not what it is. A
  streamed and a plain request share a key; the cache replays either form.
* A top-level ``null`` is dropped, as OpenAI treats it as absent. Deeper down
  (message content, tool arguments, ...) ``null`` is a value and is kept.

Canonical encoding, version 1 (stable across processes, platforms, releases)
---------------------------------------------------------------------------
``material = MAGIC + S(tenant) + S(kind) + V(request without the fields above)``
where ``MAGIC = b"llm-gateway/cachekey/v1\\n"`` and ``u32`` is a 4-byte
big-endian unsigned length (a string or container of 2**32 or more bytes or
items raises ``ValueError``)::

    V(None)  = b"N"                V(False) = b"F"          V(True) = b"T"
    V(int)   = b"I" u32(L) two's-complement big-endian in L = |x|.bit_length() // 8 + 1 bytes
    V(float) = V(int(x)) if x is integral (so 1 == 1.0 == 1e0 == 10e-1, -0.0 == 0),
               else b"D" + 8-byte IEEE-754 binary64 big-endian
    V(str)   = S(x) = b"S" u32(len) + UTF-8 bytes ("surrogatepass": a lone
               surrogate encodes, it does not crash, and cannot collide with valid text)
    V(list)  = b"L" u32(count) + V(item)...
    V(dict)  = b"M" u32(count) + (S(key) + V(value))... with keys sorted by code
               point (the same order as their UTF-8 bytes)

Every item is type-tagged and self-delimiting, so distinct values encode to
distinct bytes and ``true`` never meets ``1``. Strings are compared exactly: no
Unicode normalisation. Changing any of this changes every key: bump the
version in ``MAGIC``, and ``tests/data/cachekey_golden.json`` will fail until
its digests are regenerated on purpose.
"""

from __future__ import annotations

import hashlib
import math
from struct import Struct
from typing import Any

__all__ = (
    "IMPLEMENTATION",
    "KINDS",
    "MAGIC",
    "MAX_DEPTH",
    "TRANSPORT_FIELDS",
    "cache_key",
    "canonical_encoding",
)

IMPLEMENTATION = "py"
MAGIC = b"llm-gateway/cachekey/v1\n"
KINDS: frozenset[str] = frozenset({"chat", "embeddings", "messages", "responses"})
TRANSPORT_FIELDS: frozenset[str] = frozenset({"stream", "stream_options", "user"})
MAX_DEPTH = 128

_U32_MAX = 0xFFFFFFFF
_HEAD = Struct(">cI")  # tag, u32 length or count
_DOUBLE = Struct(">cd")


def _head(tag: bytes, n: int) -> bytes:
    if n > _U32_MAX:
        raise ValueError(f"a string or container of {n} bytes or items is too large to key")
    return _HEAD.pack(tag, n)


def _put_str(s: str, out: bytearray) -> None:
    data = s.encode("utf-8", "surrogatepass")
    out += _head(b"S", len(data))
    out += data


def _put_int(x: int, out: bytearray) -> None:
    size = (x.bit_length() >> 3) + 1
    out += _head(b"I", size)
    out += x.to_bytes(size, "big", signed=True)


def _encode(items: list[tuple[str, Any]], out: bytearray) -> None:
    """Append V(dict(items)) to ``out``; ``items`` are already sorted and filtered.

    Iterative: a stack of iterators, one per open container, instead of
    recursion, so depth costs memory we bound (MAX_DEPTH), never the C stack.
    """
    out += _head(b"M", len(items))
    stack: list[Any] = [iter(items)]
    is_dict = [True]
    while stack:
        for item in stack[-1]:
            if is_dict[-1]:
                key, value = item
                _put_str(key, out)
            else:
                value = item
            t = type(value)
            if t is str:
                _put_str(value, out)
            elif t is dict:
                if len(stack) >= MAX_DEPTH:
                    raise ValueError(f"request nests deeper than {MAX_DEPTH} levels")
                for k in value:
                    if type(k) is not str:
                        raise TypeError(f"dict keys must be str, got {type(k).__name__}")
                out += _head(b"M", len(value))
                stack.append(iter(sorted(value.items())))
                is_dict.append(True)
                break  # descend; this level's iterator resumes afterwards
            elif t is list:
                if len(stack) >= MAX_DEPTH:
                    raise ValueError(f"request nests deeper than {MAX_DEPTH} levels")
                out += _head(b"L", len(value))
                stack.append(iter(value))
                is_dict.append(False)
                break
            elif t is int:
                _put_int(value, out)
            elif t is float:
                if not math.isfinite(value):
                    raise ValueError(f"non-finite float {value!r} is not JSON")
                if value.is_integer():
                    _put_int(int(value), out)
                else:
                    out += _DOUBLE.pack(b"D", value)
            elif value is None:
                out += b"N"
            elif value is True:
                out += b"T"
            elif value is False:
                out += b"F"
            else:
                raise TypeError(f"{type(value).__name__} is not a JSON type")
        else:
            stack.pop()
            is_dict.pop()


def _material(tenant: str, kind: str, request: dict[str, Any]) -> bytearray:
    if type(tenant) is not str:
        raise TypeError(f"tenant must be str, got {type(tenant).__name__}")
    if not tenant:
        raise ValueError("tenant must not be empty")
    if type(kind) is not str:
        raise TypeError(f"kind must be str, got {type(kind).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if type(request) is not dict:
        raise TypeError(f"request must be a dict, got {type(request).__name__}")
    for k in request:
        if type(k) is not str:
            raise TypeError(f"dict keys must be str, got {type(k).__name__}")
    items = sorted(
        (k, v) for k, v in request.items() if v is not None and k not in TRANSPORT_FIELDS
    )
    out = bytearray(MAGIC)
    _put_str(tenant, out)
    _put_str(kind, out)
    _encode(items, out)
    return out


def canonical_encoding(tenant: str, kind: str, request: dict[str, Any]) -> bytes:
    """The exact bytes ``cache_key`` hashes (see the module docstring)."""
    return bytes(_material(tenant, kind, request))


def cache_key(tenant: str, kind: str, request: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical request; the caller keys ``gw:{tenant}:cache:<digest>``."""
    return hashlib.sha256(_material(tenant, kind, request)).hexdigest()
