"""The auto-pipeline (gateway/store/autopipe.py) against a real redis-server: replies
reach the right callers in any interleaving, an error reply fails only its call, a
caller that gives up does not shift the replies of the others, a paused or killed
server fails what is in flight and the next call reconnects."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gateway.store.autopipe import AutoPipeline, pack, pack_command
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

ECHO = "return {KEYS[1], ARGV[1]}"
FAIL = "return redis.error_reply('ERR no ' .. ARGV[1])"
INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_pack_is_resp() -> None:
    assert pack(("EVALSHA", "ab", 1, "k", b"\x00\r\n", -3)) == (
        b"*6\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n$3\r\n\x00\r\n\r\n$2\r\n-3\r\n"
    )
    with pytest.raises(TypeError):
        pack(("SET", "k", 1.5))
    with pytest.raises(TypeError):
        pack(("SET", "k", True))


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "ab", 1, "k", b"\x00\r\n", -3),
        ("EVALSHA", "f" * 40, 2, "gw:{t\u00e9}:k", "", 0, 2**53 - 1, b"gwc1 x\n" * 100),
    ],
)
def test_the_packer_in_use_writes_what_pack_writes(args: tuple[Any, ...]) -> None:
    """hiredis's packer (when installed) and ``pack`` give the same bytes for what the
    gateway sends: str (UTF-8), int and bytes."""
    assert pack_command(args) == pack(args)


async def _setup(url: str, **kw: Any) -> tuple[Redis, AutoPipeline, dict[str, str]]:
    client = Redis.from_url(url)
    shas = {name: await client.script_load(src) for name, src in
            (("echo", ECHO), ("fail", FAIL), ("incr", INCR))}  # fmt: skip
    return client, AutoPipeline(client, **kw), shas


def test_each_caller_gets_its_own_reply(redis_url: str) -> None:
    async def main() -> None:
        client, pipe, sha = await _setup(redis_url)
        try:

            async def one(i: int) -> None:
                for j in range(50):
                    if random.random() < 0.3:
                        await asyncio.sleep(0)  # vary which calls share a loop turn
                    if j % 7 == 3:
                        with pytest.raises(ResponseError, match=f"no {i}-{j}"):
                            await pipe.evalsha(sha["fail"], ["k"], [f"{i}-{j}"])
                        continue
                    got = await pipe.evalsha(sha["echo"], [f"key{i}"], [j])
                    assert got == [f"key{i}".encode(), str(j).encode()]

            await asyncio.gather(*(one(i) for i in range(40)))
            counts = await asyncio.gather(
                *(pipe.evalsha(sha["incr"], ["n"], [1]) for _ in range(500))
            )
            assert sorted(counts) == list(range(1, 501))  # every script ran once, atomically
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_lazy_calls_wait_for_the_next_call_or_the_linger(redis_url: str) -> None:
    """A lazy call is not written at the end of its turn: it goes out, in the order the
    calls were made, with the next call that is waited for, or after ``LINGER_S``."""
    from gateway.store import autopipe

    async def main() -> None:
        client, pipe, sha = await _setup(redis_url)
        try:
            await client.delete("lz")
            await pipe.evalsha(sha["incr"], ["warm"], [1])  # connected
            first = pipe.evalsha(sha["incr"], ["lz"], [5], lazy=True)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert await client.get("lz") is None and not first.done()  # not sent yet
            second = await pipe.evalsha(sha["incr"], ["lz"], [1])  # takes it along, after it
            assert (await first, second) == (5, 6)
            alone = pipe.evalsha(sha["incr"], ["lz"], [10], lazy=True)
            assert await asyncio.wait_for(alone, 1) == 16  # the linger sent it
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            late = pipe.evalsha(sha["incr"], ["lz"], [1], lazy=True)
            assert await late == 17
            assert loop.time() - t0 >= autopipe.LINGER_S * 0.9
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_noscript_is_that_calls_error(redis_url: str) -> None:
    async def main() -> None:
        client, pipe, sha = await _setup(redis_url)
        try:
            missing = "0" * 40
            a = pipe.evalsha(missing, ["k"], [1])
            b = pipe.evalsha(sha["echo"], ["k"], [2])
            with pytest.raises(NoScriptError):
                await a
            assert await b == [b"k", b"2"]
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_a_caller_that_gives_up_does_not_shift_the_others(redis_server: RedisServer) -> None:
    async def main() -> None:
        client, pipe, sha = await _setup(redis_server.url)
        try:
            await pipe.evalsha(sha["echo"], ["warm"], [0])
            redis_server.pause()
            try:
                slow = [pipe.evalsha(sha["echo"], [f"s{i}"], [i]) for i in range(5)]
                for fut in slow[::2]:  # these callers time out and stop waiting
                    with pytest.raises(TimeoutError):
                        async with asyncio.timeout(0.05):
                            await fut
            finally:
                redis_server.resume()
            for i in (1, 3):
                assert await slow[i] == [f"s{i}".encode(), str(i).encode()]
            assert await pipe.evalsha(sha["echo"], ["after"], [9]) == [b"after", b"9"]
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_calls_time_out_by_their_batch_timer(redis_server: RedisServer) -> None:
    """``timeout_s``: a call unanswered by then fails with TimeoutError (the calls of a
    turn share one timer per timeout); the late replies are read and thrown away, so the
    calls after them still get their own."""

    async def main() -> None:
        client, pipe, sha = await _setup(redis_server.url)
        loop = asyncio.get_running_loop()
        try:
            await pipe.evalsha(sha["echo"], ["warm"], [0], 0.5)
            redis_server.pause()
            try:
                t0 = loop.time()
                short = [pipe.evalsha(sha["echo"], [f"s{i}"], [i], 0.05) for i in range(3)]
                longer = pipe.evalsha(sha["echo"], ["l"], [7], 5.0)
                untimed = pipe.evalsha(sha["echo"], ["u"], [8])
                for fut in short:
                    with pytest.raises(TimeoutError):
                        await fut
                assert loop.time() - t0 < 1.0
                assert not longer.done() and not untimed.done()
            finally:
                redis_server.resume()
            assert await longer == [b"l", b"7"]
            assert await untimed == [b"u", b"8"]
            assert await pipe.evalsha(sha["echo"], ["after"], [9], 0.5) == [b"after", b"9"]
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_each_turns_calls_get_their_own_timer_while_connecting(
    redis_server: RedisServer,
) -> None:
    """Calls queued turn after turn behind a connection that never finishes opening (a
    stopped server accepts TCP but never answers the handshake) each time out on time."""

    async def main() -> None:
        client, pipe, sha = await _setup(redis_server.url)
        loop = asyncio.get_running_loop()
        redis_server.pause()
        try:
            for i in range(4):
                t0 = loop.time()
                with pytest.raises(TimeoutError):
                    await pipe.evalsha(sha["echo"], ["k"], [i], 0.05)
                assert loop.time() - t0 < 0.5, i
                await asyncio.sleep(0.02)
        finally:
            redis_server.resume()
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_a_silent_server_fails_the_calls_in_flight(redis_server: RedisServer) -> None:
    async def main() -> None:
        client, pipe, sha = await _setup(redis_server.url, read_timeout_s=0.2)
        try:
            await pipe.evalsha(sha["echo"], ["warm"], [0])
            redis_server.pause()
            try:
                with pytest.raises(RedisConnectionError):
                    await pipe.evalsha(sha["echo"], ["k"], [1])
            finally:
                redis_server.resume()
            # a new connection for the next call
            assert await pipe.evalsha(sha["echo"], ["k"], [2]) == [b"k", b"2"]
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_a_busy_connection_outlives_its_watchdog(redis_server: RedisServer) -> None:
    """Replies that keep coming keep the connection: the watchdog drops only one that
    answered nothing for a whole period, however long the pipe has been busy."""

    async def main() -> None:
        client, pipe, sha = await _setup(redis_server.url, read_timeout_s=0.05)
        try:
            await pipe.evalsha(sha["echo"], ["warm"], [0])
            conn = pipe._conn
            loop = asyncio.get_running_loop()
            end = loop.time() + 0.4  # eight watchdog periods
            n = 0
            while loop.time() < end:
                replies = await asyncio.gather(
                    *(pipe.evalsha(sha["incr"], ["n"], [1]) for _ in range(20))
                )
                n += len(replies)
                await asyncio.sleep(0.005)
            assert pipe._conn is conn  # never dropped
            assert int(await client.get("n")) == n
            await asyncio.sleep(0.15)  # idle: nothing waits, nothing is dropped
            assert pipe._conn is conn
            assert await pipe.evalsha(sha["echo"], ["k"], [1]) == [b"k", b"1"]
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_a_dropped_silent_connection_leaves_no_reader(redis_server: RedisServer) -> None:
    async def main() -> None:
        client, pipe, sha = await _setup(redis_server.url, read_timeout_s=0.1)
        try:
            await pipe.evalsha(sha["echo"], ["warm"], [0])
            reader = pipe._reader
            redis_server.pause()
            try:
                with pytest.raises(RedisConnectionError):
                    await pipe.evalsha(sha["echo"], ["k"], [1])
            finally:
                redis_server.resume()
            await asyncio.sleep(0)
            assert reader is not None and reader.done()
            assert await pipe.evalsha(sha["echo"], ["k"], [2]) == [b"k", b"2"]
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_a_restarted_server_is_reconnected(own_redis: RedisServer) -> None:
    async def main() -> None:
        client = Redis.from_url(own_redis.url)
        pipe = AutoPipeline(client)
        try:
            sha = await client.script_load(ECHO)
            assert await pipe.evalsha(sha, ["k"], [1]) == [b"k", b"1"]
            own_redis.kill()
            with pytest.raises(RedisConnectionError):
                await pipe.evalsha(sha, ["k"], [2])  # down: refused or reset
            own_redis.restart()
            with pytest.raises(NoScriptError):  # a new server: the script is gone
                await pipe.evalsha(sha, ["k"], [3])
            assert await client.script_load(ECHO) == sha
            assert await pipe.evalsha(sha, ["k"], [4]) == [b"k", b"4"]
        finally:
            await pipe.aclose()
            await client.aclose()

    asyncio.run(main())


def test_closed_pipeline_refuses(redis_url: str) -> None:
    async def main() -> None:
        client, pipe, sha = await _setup(redis_url)
        await pipe.aclose()
        with pytest.raises(RedisConnectionError):
            await pipe.evalsha(sha["echo"], ["k"], [1])
        await client.aclose()

    asyncio.run(main())
