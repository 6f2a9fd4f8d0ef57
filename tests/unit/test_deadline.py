"""``gateway.deadline``: asyncio.timeout's meaning (TimeoutError when the time runs out,
a cancellation from elsewhere stays one), with a plain ``with``."""

from __future__ import annotations

import asyncio

import pytest

from gateway.deadline import deadline


def test_the_time_running_out_is_a_timeout_error() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError), deadline(0.02) as d:
            await asyncio.sleep(5)
        assert d.expired and loop.time() - t0 < 1.0
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_block_that_ends_in_time_leaves_no_timer() -> None:
    async def main() -> None:
        with deadline(0.02) as d:
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # the timer would have fired by now
        assert not d.expired
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_no_time_left_expires_at_the_first_await(seconds: float) -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError), deadline(seconds):
            await asyncio.sleep(1)

    asyncio.run(main())


@pytest.mark.parametrize("seconds", [5.0, 0.01], ids=["before", "with-the-timer"])
def test_a_cancellation_from_outside_stays_a_cancellation(seconds: float) -> None:
    """Cancelled by its owner, before the deadline or in the turn it fires: the owner's
    cancellation wins, as with asyncio.timeout."""

    async def main() -> None:
        async def victim() -> None:
            with deadline(seconds):
                await asyncio.sleep(5)

        task = asyncio.create_task(victim())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_caught_timeout_lets_the_task_go_on() -> None:
    async def main() -> None:
        for _ in range(3):
            with pytest.raises(TimeoutError), deadline(0.005):
                await asyncio.sleep(1)
        await asyncio.sleep(0.01)  # not cancelled again later
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_outside_a_task_it_says_so() -> None:
    with pytest.raises(RuntimeError), deadline(1):  # no running loop
        pass

    async def in_a_callback() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def callback() -> None:
            try:
                with deadline(1):
                    pass
            except RuntimeError as exc:
                fut.set_result(str(exc))

        loop.call_soon(callback)
        assert "inside a task" in await fut

    asyncio.run(in_a_callback())
