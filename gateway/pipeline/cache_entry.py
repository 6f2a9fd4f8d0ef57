"""The response cache's entries and request directives (used by ``cache.py``).

``Entry`` is the stored form of an answer (``gwc1 <provider> <prompt> <completion>``,
a newline, the body), or of a streamed answer as it was relayed, not yet assembled
(``gws1 <provider> <prompt> <completion> <n>``, a newline, ``n`` bytes of the
provider's usage as JSON, the frames); ``directives`` reads the request's cache headers (a TTL
override, ``no-cache``, ``no-store``); ``tag`` is a tenant's Redis Cluster hash tag.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gateway.errors import InvalidRequest

if TYPE_CHECKING:
    from gateway.wire.chat import Usage

__all__ = ["MAX_TTL_S", "TTL_HEADER", "Entry", "directives", "tag", "usage_ints"]

MAX_TTL_S = 86_400
TTL_HEADER = "x-gateway-cache-ttl"
_TTL_HEADER_B = TTL_HEADER.encode()
_MAGIC = b"gwc1 "
_STREAM = b"gws1 "
_TAG_SAFE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


# -- tenant and request directives -----------------------------------------------------


def tag(tenant: str) -> str:
    """The Redis Cluster hash tag for a tenant: the id itself when it is plain text."""
    if _TAG_SAFE.fullmatch(tenant):
        return tenant
    return "h-" + hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _parse_ttl(value: bytes) -> int:
    text = value.strip()
    if text.isdigit() and len(text) <= 6:
        ttl = int(text)
        if 1 <= ttl <= MAX_TTL_S:
            return ttl
    raise InvalidRequest(
        f"Invalid {TTL_HEADER} header: expected whole seconds from 1 to {MAX_TTL_S}",
        param=TTL_HEADER,
        code="invalid_header",
    )


def directives(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bool, bool]:
    """(TTL override, no-cache, no-store) from raw ASGI headers; 400 on a bad TTL."""
    ttl: int | None = None
    no_cache = no_store = False
    for name, value in headers:
        if name == b"cache-control":
            for part in value.lower().split(b","):
                directive = part.split(b"=", 1)[0].strip()
                if directive == b"no-cache":
                    no_cache = True
                elif directive == b"no-store":
                    no_store = True
        elif name == _TTL_HEADER_B:
            ttl = _parse_ttl(value)
    return ttl, no_cache, no_store


# -- stored entries ---------------------------------------------------------------------


class Entry:
    """A stored answer: ``gwc1 <provider> <prompt_tokens> <completion_tokens>\\n<body>``.

    With ``frames`` the body is a stream's frames as the client got them, and ``usage``
    the provider's usage (JSON, empty if none) that the endpoint's assembler falls back
    on; ``cache.py`` assembles such an entry when it is first read.
    """

    __slots__ = ("body", "completion_tokens", "frames", "prompt_tokens", "provider", "usage")

    def __init__(
        self,
        provider: str,
        body: bytes,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        *,
        frames: bool = False,
        usage: bytes = b"",
    ) -> None:
        self.provider = provider
        self.body = body
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.frames = frames
        self.usage = usage

    def encode(self) -> bytes:
        counts = f"{self.provider} {self.prompt_tokens} {self.completion_tokens}"
        if self.frames:
            head = f"{counts} {len(self.usage)}\n".encode()
            return _STREAM + head + self.usage + self.body
        return _MAGIC + counts.encode() + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """None for anything this version did not write (it is then a miss)."""
        frames = data.startswith(_STREAM)
        if not frames and not data.startswith(_MAGIC):
            return None
        nl = data.find(b"\n", len(_MAGIC))
        parts = data[len(_MAGIC) : nl].split(b" ") if nl > 0 else []
        if len(parts) != 3 + frames or not all(p.isdigit() for p in parts[1:]):
            return None
        entry = cls(parts[0].decode(), data[nl + 1 :], int(parts[1]), int(parts[2]))
        if frames:
            n = int(parts[3])
            if n > len(entry.body):
                return None
            entry.frames = True
            entry.usage, entry.body = entry.body[:n], entry.body[n:]
        return entry


def usage_ints(usage: Usage | None) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    return usage.prompt_tokens or 0, usage.completion_tokens or 0
