"""MicroBatcher: concurrent submissions become one call; a lone request does not wait; a failing
request fails alone."""

from __future__ import annotations

import asyncio

import pytest

from recstack.serve.batcher import MicroBatcher


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_submissions_share_one_call_and_keep_their_order():
    calls: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        calls.append(items)
        return [i * 10 for i in items]

    async def main():
        batcher = MicroBatcher(process, max_batch=16, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        finally:
            await batcher.stop()

    results = run(main())
    assert [r for r, _ in results] == [0, 10, 20, 30, 40, 50]
    assert calls == [[0, 1, 2, 3, 4, 5]]


def test_max_batch_splits_the_queue():
    calls: list[list[int]] = []

    async def main():
        batcher = MicroBatcher(lambda items: calls.append(items) or items, max_batch=4, max_wait_ms=20)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        finally:
            await batcher.stop()

    assert [r for r, _ in run(main())] == list(range(10))
    assert [len(c) for c in calls] == [4, 4, 2]


def test_a_lone_request_at_light_load_does_not_wait():
    async def main():
        batcher = MicroBatcher(lambda items: items, max_batch=4, max_wait_ms=300)
        await batcher.start()
        try:
            first = await batcher.submit(1)
            second = await batcher.submit(2)  # the previous batch was a single request: still no wait
            return first, second
        finally:
            await batcher.stop()

    for (result, waited), expected in zip(run(main()), (1, 2)):
        assert result == expected
        assert waited < 0.15, waited  # not the 300 ms max_wait


def test_failing_request_fails_alone():
    def process(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("bad item")
        return items

    async def main():
        batcher = MicroBatcher(process, max_batch=8, max_wait_ms=20)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True)
        finally:
            await batcher.stop()

    ok1, bad, ok2 = run(main())
    assert ok1[0] == 1 and ok2[0] == 2
    assert isinstance(bad, ValueError)


def test_disabled_batching_calls_once_per_request():
    calls: list[list[int]] = []

    async def main():
        batcher = MicroBatcher(lambda items: calls.append(items) or items, enabled=False)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(3)))
        finally:
            await batcher.stop()

    assert [r for r, _ in run(main())] == [0, 1, 2]
    assert sorted(calls) == [[0], [1], [2]]


@pytest.mark.parametrize("enabled", [True, False])
def test_stop_is_clean(enabled):
    async def main():
        batcher = MicroBatcher(lambda items: items, enabled=enabled)
        await batcher.start()
        await batcher.stop()

    run(main())
