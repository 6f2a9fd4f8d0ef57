"""OpenAI ``/v1/models`` list."""

from __future__ import annotations

import msgspec


class ModelCard(msgspec.Struct, kw_only=True, gc=False):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True, gc=False):
    object: str = "list"
    data: list[ModelCard]


class UpstreamModelList(msgspec.Struct, gc=False):
    data: list[ModelCard]
