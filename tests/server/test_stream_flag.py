"""The per-stream wake-up flag of the ADS server: asyncio.Event's behaviour for one waiter."""

import asyncio

from controlplane.server.ads import _Flag, _Stream


def test_wait_returns_at_once_when_the_flag_is_already_set():
    async def main() -> bool:
        flag = _Flag()
        flag.set()
        await asyncio.wait_for(flag.wait(), 1)
        return flag.is_set()

    assert asyncio.run(main()) is True


def test_set_wakes_the_waiter_and_clear_makes_the_next_wait_block():
    async def main() -> list[str]:
        flag = _Flag()
        seen: list[str] = []

        async def waiter() -> None:
            await flag.wait()
            seen.append("woken")

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        seen.append("before set")
        flag.set()
        await asyncio.wait_for(task, 1)
        flag.clear()
        blocked = asyncio.create_task(flag.wait())
        await asyncio.sleep(0.01)
        seen.append(f"blocked after clear: {not blocked.done()}")
        flag.set()
        await asyncio.wait_for(blocked, 1)
        return seen

    assert asyncio.run(main()) == ["before set", "woken", "blocked after clear: True"]


def test_a_cancelled_wait_leaves_the_flag_usable():
    async def main() -> bool:
        flag = _Flag()
        task = asyncio.create_task(flag.wait())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        flag.set()
        await asyncio.wait_for(flag.wait(), 1)
        return flag.is_set()

    assert asyncio.run(main()) is True


def test_streams_are_slotted_so_they_carry_no_instance_dict():
    assert "__dict__" not in dir(_Stream)
    assert not hasattr(_Flag(), "__dict__")
