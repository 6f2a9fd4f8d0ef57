"""The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct, gc=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct, gc=False):
    error: ErrorBody


class UpstreamErrorView(msgspec.Struct, gc=False):
    """An OpenAI-compatible provider's error body, read leniently."""

    error: ErrorBody | str | None = None
