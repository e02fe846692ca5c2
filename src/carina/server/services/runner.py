"""The bounded worker pool that runs inferences off the event loop.

``workers`` jobs run at once in threads (PyTorch releases the GIL in its kernels); at most
``queue_limit`` more wait. A request past that gets :class:`ServerBusyError` (HTTP 503 with
``Retry-After``) at once instead of waiting without bound. A job that waited while its client
went away is dropped before it starts; a job past ``timeout`` gives :class:`InferenceTimeoutError`.
Either way the job is cancelled (:func:`carina.limits.cancellable`): it stops at its next
cancellation point, so the worker and its place in the queue are free again within a second.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from carina.errors import InferenceTimeoutError, RequestError, ServerBusyError
from carina.limits import cancellable

T = TypeVar("T")


class ClientGoneError(RequestError):
    """The client went away before its job started; the job was not run."""


class InferenceRunner:
    """Runs blocking jobs in a fixed pool with a bounded queue.

    Args:
        workers: jobs running at once.
        queue_limit: jobs that may wait for a worker.
        timeout: seconds a job may run, counted from its start (not its wait in the queue).
        initializer: run once in each worker thread (e.g. its share of the CPU threads).
    """

    def __init__(
        self,
        *,
        workers: int,
        queue_limit: int,
        timeout: float,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        self.workers = workers
        self.queue_limit = queue_limit
        self.timeout = timeout
        self._initializer = initializer
        self._pool: ThreadPoolExecutor | None = self._new_pool()
        self._pending = 0
        self._running = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Jobs accepted and not finished (running or waiting)."""
        return self._pending

    @property
    def waiting(self) -> int:
        """Jobs waiting for a worker."""
        return max(self._pending - self._running, 0)

    async def run(self, job: Callable[[], T], *, cancelled: threading.Event | None = None) -> T:
        """Run ``job`` in the pool and return its result.

        Raises:
            ServerBusyError: the queue is full.
            InferenceTimeoutError: the job took longer than ``timeout`` (it is cancelled).
            ClientGoneError: ``cancelled`` was set before the job started.
        """
        cancelled = cancelled or threading.Event()
        with self._lock:
            if self._pending >= self.workers + self.queue_limit:
                raise ServerBusyError(
                    f"the server is busy ({self._pending} inferences running or waiting); "
                    "retry shortly",
                    retry_after=max(1, self._pending // max(self.workers, 1)),
                )
            self._pending += 1

        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def call() -> T:
            with self._lock:
                self._running += 1
            loop.call_soon_threadsafe(started.set)
            try:
                if cancelled.is_set():
                    raise ClientGoneError("the client disconnected before its inference started")
                with cancellable(cancelled):
                    return job()
            finally:
                with self._lock:
                    self._running -= 1
                    self._pending -= 1

        future = loop.run_in_executor(self._started(), call)
        # A cancelled job ends with an error nobody awaits any more: retrieve it here.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        waiting = asyncio.ensure_future(started.wait())
        either: set[asyncio.Future[Any]] = {waiting, future}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError as exc:
            cancelled.set()
            raise InferenceTimeoutError(
                f"the inference took longer than {self.timeout:g} s and was cancelled"
            ) from exc
        except asyncio.CancelledError:  # the request's task itself was cancelled
            cancelled.set()
            raise

    def start(self) -> None:
        """A fresh pool after :meth:`shutdown` (an app started again)."""
        self._started()

    def _started(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = self._new_pool()
        return self._pool

    def shutdown(self) -> None:
        """Finish running jobs and stop the pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            max_workers=self.workers,
            thread_name_prefix="carina-infer",
            initializer=self._initializer,
        )
