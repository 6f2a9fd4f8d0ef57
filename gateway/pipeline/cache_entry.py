"""The response cache's entries and request directives (used by ``cache.py``).

``Entry`` is the stored form of an answer (``gwc1 <provider> <prompt> <completion>``,
a newline, the body); ``directives`` reads the request's cache headers (a TTL
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
    """A stored answer: ``gwc1 <provider> <prompt_tokens> <completion_tokens>\\n<body>``."""

    __slots__ = ("body", "completion_tokens", "prompt_tokens", "provider")

    def __init__(
        self, provider: str, body: bytes, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> None:
        self.provider = provider
        self.body = body
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    def encode(self) -> bytes:
        head = f"{self.provider} {self.prompt_tokens} {self.completion_tokens}\n".encode()
        return _MAGIC + head + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """None for anything this version did not write (it is then a miss)."""
        if not data.startswith(_MAGIC):
            return None
        nl = data.find(b"\n", len(_MAGIC))
        parts = data[len(_MAGIC) : nl].split(b" ") if nl > 0 else []
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return cls(parts[0].decode(), data[nl + 1 :], int(parts[1]), int(parts[2]))


def usage_ints(usage: Usage | None) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    return usage.prompt_tokens or 0, usage.completion_tokens or 0
