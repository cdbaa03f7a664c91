"""Every task is awaited on every exit path: errors never escape as unretrieved task exceptions."""

from __future__ import annotations

import asyncio
import gc

import pytest

from lmmsae.backends.concurrency import Fatal, RequestFailed, bounded_map, iterate_async, run_sync, settle


async def work(i):
    await asyncio.sleep(0.01 * (i % 3))
    if i % 2:
        raise Fatal(f"bad key seen by request {i}")
    return i


def test_a_fatal_error_among_many_is_raised_once_and_nothing_leaks(capfd):
    async def produce():
        async for item in bounded_map(iter(range(12)), work, window=6):
            yield item

    with pytest.raises(Fatal, match="bad key"):
        list(iterate_async(produce))
    gc.collect()
    assert capfd.readouterr().err == ""  # no "Task exception was never retrieved"


def test_settle_keeps_request_failures_and_cancels_the_rest_on_a_fatal_one(capfd):
    async def fail(reason):
        raise RequestFailed(reason)

    async def slow():
        await asyncio.sleep(30)

    async def both():
        return await settle([asyncio.sleep(0, "a"), fail("rate limited")])

    out = run_sync(both)
    assert out[0] == "a" and isinstance(out[1], RequestFailed) and str(out[1]) == "rate limited"

    async def fatal():
        return await settle([slow(), work(1), slow()])

    with pytest.raises(Fatal):
        run_sync(fatal)  # returns at once: the slow ones are cancelled and awaited
    gc.collect()
    assert capfd.readouterr().err == ""
