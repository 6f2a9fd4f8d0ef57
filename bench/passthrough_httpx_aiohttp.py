"""Bare pass-through for bench/e2e.py: as passthrough_httpx, but httpx over aiohttp.

The client is ``httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport())``
(PyPI ``httpx-aiohttp``; e2e.py installs it with --no-deps into bench/.work/pydeps
so it runs on the same httpx and aiohttp as the other targets).
"""

from __future__ import annotations

import httpx
from httpx_aiohttp import AiohttpTransport
from passthrough_httpx import make_app


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport())


app = make_app(new_client)
