"""The Lua scripts of the state backend: one per ``*.lua`` file beside this module.

Each file opens with a comment naming its KEYS, ARGV and reply. A line
``-- #include <file>.lua`` is replaced by that file's text when the script is
read: ``ratelimit_reserve.lua`` and ``ratelimit_settle.lua`` both include
``ratelimit_gcra.lua``, a prelude (not a script of its own) holding their shared
GCRA math, and ``ratelimit_reserve_on_miss.lua`` is a guard in front of the whole of
``ratelimit_reserve.lua`` (includes nest), so Redis still receives one self-contained
script per call. They are read
with ``importlib.resources`` (package data, so they ship in the wheel) and
registered once per client at start-up as redis-py ``AsyncScript`` handles
(the SHA computed once). A call is ``EVALSHA``; on ``NOSCRIPT`` (after
``SCRIPT FLUSH``, a restart or a failover to a replica that never saw the
script) ``RedisBackend.run`` sends ``EVAL`` with the source, which runs it and
caches it again in one round trip, so no caller ever sees the error. (Calling
the ``AsyncScript`` itself does the same in two: ``SCRIPT LOAD``, ``EVALSHA``.)
``preload`` sends ``SCRIPT LOAD`` at start-up (to every primary on a cluster)
so the first request does not pay for it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster
    from redis.commands.core import AsyncScript

__all__ = [
    "CACHE_SCRIPTS",
    "ON_MISS_SCRIPTS",
    "RATELIMIT_SCRIPTS",
    "TENANT_SCRIPTS",
    "preload",
    "register",
    "source",
]

RATELIMIT_SCRIPTS = ("ratelimit_reserve", "ratelimit_settle")
# The reservation sent with the cache lookup, in its round trip (standalone Redis only).
ON_MISS_SCRIPTS = ("ratelimit_reserve_on_miss",)
TENANT_SCRIPTS = ("tenant_put", "ledger_add")
CACHE_SCRIPTS = ("cache_lookup", "cache_store", "cache_unlock", "cache_compact")


_INCLUDE = re.compile(r"^-- #include (\w+\.lua)\n", re.MULTILINE)


def _read(filename: str) -> str:
    return resources.files("gateway.store").joinpath(filename).read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua``, each ``-- #include <file>.lua`` line replaced by
    that file's own source (includes nest; a file never includes itself)."""
    return _INCLUDE.sub(lambda m: source(m.group(1)[:-4]), _read(f"{name}.lua"))


def register(client: Redis | RedisCluster, names: tuple[str, ...]) -> dict[str, AsyncScript]:
    """An ``AsyncScript`` per name, bound to ``client`` (no I/O: the SHA is computed here)."""
    return {name: client.register_script(source(name)) for name in names}


async def preload(client: Redis | RedisCluster, scripts: dict[str, AsyncScript]) -> None:
    """``SCRIPT LOAD`` every script (cluster: on every primary)."""
    for script in scripts.values():
        await client.script_load(script.script)
