"""Bounded concurrency, retries with backoff, a token spending cap, and async work seen as an iterator.

We retry ourselves (clients run with max_retries=0) so every attempt is counted, bounded and logged.
Every task started here is awaited on every exit path (success, failure, cancellation), so no error
escapes as an unretrieved task exception, unscrubbed, on stderr.
"""

from __future__ import annotations

import asyncio
import queue
import random
import sys
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator

from lmmsae.errors import UserError
from lmmsae.secrets import scrub


class RequestFailed(RuntimeError):
    """A request that will not succeed (retries exhausted or a non-retryable error); the feature fails."""

    def __init__(self, reason: str, attempts: int = 0):
        super().__init__(reason)
        self.attempts = attempts


class BudgetExhausted(RequestFailed):
    """The token cap is reached; remaining features are recorded as failed, not sent."""


class Fatal(Exception):
    """An error every further request would hit too (bad key, unknown model): stop the run."""


@dataclass
class RetryPolicy:
    max_retries: int = 5        # retries after the first attempt
    backoff: float = 1.0        # seconds before the first retry; doubles each time
    backoff_max: float = 60.0
    jitter: float = 0.25        # +- fraction of random jitter, so parallel retries spread out

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        base = min(self.backoff * (2 ** retry), self.backoff_max)
        base *= 1.0 + self.jitter * (2 * rng.random() - 1)
        if retry_after is not None:
            base = max(base, min(retry_after, self.backoff_max))
        return max(base, 0.0)


class TokenBudget:
    """Counts billed tokens; `check()` refuses new requests once `cap` (0 = no cap) is reached.

    Requests already in flight finish, so the overshoot is at most concurrency x one request.
    """

    def __init__(self, cap: int = 0):
        self.cap = int(cap)
        self.spent = 0
        self._lock = threading.Lock()

    def check(self) -> None:
        if self.cap and self.spent >= self.cap:
            raise BudgetExhausted(f"token cap reached ({self.spent} of {self.cap} tokens spent); "
                                  f"raise the cap and re-run with --resume to continue")

    def add(self, tokens: int) -> None:
        with self._lock:
            self.spent += int(tokens)


async def call_with_retries(call: Callable[[], Awaitable[Any]], classify: Callable[[BaseException], tuple[str, float | None]],
                            policy: RetryPolicy, rng: random.Random, on_retry: Callable[[str], None] | None = None):
    """Run `call` until it succeeds; `classify(exc)` says "retry" (with an optional retry-after), "fail" or "fatal".

    Returns (result, attempts). Raises RequestFailed with the last reason, or Fatal.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(), attempt
        except (asyncio.CancelledError, UserError):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure gets classified and recorded
            verdict, retry_after = classify(exc)
            reason = describe(exc)
            if verdict == "fatal":
                raise Fatal(reason) from exc
            if verdict != "retry":
                raise RequestFailed(reason, attempt) from exc
            if attempt > policy.max_retries:
                raise RequestFailed(f"gave up after {attempt} attempts; last error: {reason}", attempt) from exc
            if on_retry is not None:
                on_retry(reason)
            await asyncio.sleep(policy.delay(attempt - 1, retry_after, rng))


def describe(exc: BaseException) -> str:
    """One line naming the error (status code when there is one), secrets masked."""
    status = getattr(exc, "status_code", None)
    text = scrub(" ".join(str(exc).split()))[:200]
    kind = type(exc).__name__
    return f"{kind} ({status}): {text}" if status else f"{kind}: {text}"


async def bounded_map(items: Iterator[Any], work: Callable[[Any], Awaitable[Any]], window: int,
                      drain: float = 0.0, on_stop: Callable[[], None] | None = None) -> AsyncIterator[Any]:
    """Apply `work` to items, at most `window` at a time, pulling items lazily; yield results as they finish
    (those finishing together in the order they started, so a deterministic backend gives the same order).

    When the consumer stops early, work in flight gets up to `drain` seconds to finish (an answer
    already paid for lands in the response cache) before it is cancelled; `on_stop` is called first,
    so that work not yet started can decline to start.
    """
    pending: set[asyncio.Task] = set()
    started: list[asyncio.Task] = []
    items = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                task = asyncio.ensure_future(work(item))
                pending.add(task)
                started.append(task)
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in [t for t in started if t in done]:  # tasks finished together: in start order, so reruns match
                started.remove(task)
                yield task.result()
    finally:
        if pending and on_stop is not None:
            on_stop()
        if pending and drain > 0:
            _, pending = await asyncio.wait(pending, timeout=drain)
        for task in pending:
            task.cancel()
        if started:  # also the finished ones not yet yielded: their errors are retrieved here, not lost
            await asyncio.gather(*started, return_exceptions=True)


async def settle(coros: Iterable[Awaitable[Any]], keep: tuple[type[BaseException], ...] = (RequestFailed,)) -> list[Any]:
    """Results of all `coros`, in order, with `keep` exceptions returned in place of a result.

    Any other exception (a Fatal, a UserError, a bug) cancels the rest, waits for them, and is raised.
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None and not isinstance(error, keep):
                    raise error
        return [t.exception() or t.result() for t in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def iterate_async(make: Callable[[], AsyncIterator[Any]]) -> Iterator[Any]:
    """Run an async generator on its own event loop in a worker thread and yield its items here.

    Items arrive as soon as they are produced; closing the iterator early cancels the work; an
    exception in the worker is raised here. Works from inside a running event loop (notebooks) too.
    """
    out: queue.Queue = queue.Queue()
    state: dict[str, Any] = {}

    async def main():
        state["task"] = asyncio.current_task()
        async for item in make():
            out.put(("item", item))

    def runner():
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_report_loop_error)
        state["loop"] = loop
        try:
            loop.run_until_complete(main())
            out.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            out.put(("error", exc))
        finally:
            _cancel_leftovers(loop)
            loop.close()

    thread = threading.Thread(target=runner, name="lmmsae-explain", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            kind, value = out.get()
            if kind == "item":
                yield value
            elif kind == "error":
                finished = True
                if isinstance(value, asyncio.CancelledError):
                    return
                raise value
            else:
                finished = True
                return
    finally:
        if not finished:
            loop, task = state.get("loop"), state.get("task")
            if loop is not None and task is not None:
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:  # the loop already finished and closed
                    pass
        thread.join()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and await tasks still pending when the work ended (as asyncio.run does)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def _report_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An error the event loop could not hand to anyone: one scrubbed line on stderr, never a traceback."""
    error = context.get("exception")
    detail = describe(error) if error is not None else ""
    print(scrub(f"lmmsae: {context.get('message', 'asyncio error')}: {detail}"), file=sys.stderr)


def run_sync(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run one coroutine to completion on a private loop (in a thread), return its result."""
    async def gen():
        yield await make()

    results = list(iterate_async(gen))
    return results[0]
