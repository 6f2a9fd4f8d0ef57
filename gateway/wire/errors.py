"""The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class UpstreamErrorView(msgspec.Struct):
    """An OpenAI-compatible provider's error body, read leniently."""

    error: ErrorBody | str | None = None
