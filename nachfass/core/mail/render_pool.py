"""Rendering a large batch of mails in worker processes, one per core.

Rendering is Jinja and Python formatting: CPU work under the GIL, so one process renders on one core however
many threads it has. The morning runs are where it shows: the daily campaigns at 1M customers render for
~55 s on one of two cores, and a backtest's two sides render their 08:00 mails one after the other
(docs/benchmarks.md). A ``RenderPool`` hands a batch of at least ``min_batch`` mails to worker processes in
tasks of ``task_size`` and returns the mails in the order of the jobs, the same mails the renderer renders
itself (tests/test_render_pool.py compares them). Smaller batches render in the calling process: a task costs
a round trip, and the workers start only when a first large batch comes (~1 s: Python, Jinja, the templates).

Each worker builds its renderer from the calling renderer's parts (shop, link signer, templates folder,
campaign registry) the first time a task of that renderer reaches it, and renders every later task at the
task's logical time (``MailRenderer.at``). The link-signing key travels to the workers inside the pickled
signer over the pool's pipes; it is never logged or written. Workers are started with ``spawn`` (a fork
of a process running DuckDB threads may inherit a held lock).

All or nothing, as ``MailRenderer.render_batch``: the first failure in the order of the jobs is raised (a
``RenderError`` as the worker raised it) and the batch's other tasks are cancelled.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from typing import Any

from nachfass.core.mail.message import MailJob, RenderedMail
from nachfass.core.mail.render import MailRenderer

# Below this many mails a batch renders in the calling process (a mail takes ~1 ms; starting the workers
# ~1 s, and each task a round trip).
MIN_POOLED_BATCH = 500
TASK_SIZE = 100

# in a worker: the renderers built so far, by the key the pool gave their recipe
_WORKER_RENDERERS: dict[int, MailRenderer] = {}


def _render_task(
    key: int, recipe: tuple[Any, ...], now: datetime | None, jobs: list[MailJob]
) -> list[RenderedMail]:
    renderer = _WORKER_RENDERERS.get(key)
    if renderer is None:
        shop, signer, templates_dir, campaigns = recipe
        renderer = MailRenderer(shop, signer, templates_dir=templates_dir, campaigns=campaigns)
        _WORKER_RENDERERS[key] = renderer
    return renderer.at(now).render_batch(jobs) if now is not None else renderer.render_batch(jobs)


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class RenderPool:
    """Worker processes rendering large batches; a context manager (``close`` stops the workers).
    Thread-safe: the two sides of a backtest render through one pool."""

    def __init__(
        self, workers: int | None = None, *, min_batch: int = MIN_POOLED_BATCH, task_size: int = TASK_SIZE
    ) -> None:
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.min_batch = max(1, int(min_batch))
        self.task_size = max(1, int(task_size))
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        # id of a renderer's compiled-template cache (shared by its ``at`` copies) -> (key, the renderer,
        # held so the id is not reused while the pool lives)
        self._keys: dict[int, tuple[int, MailRenderer]] = {}
        self.pooled_mails = 0  # mails rendered by the workers so far

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def bind(self, renderer: MailRenderer) -> PooledRenderer:
        """``renderer`` rendering its batches through this pool (the ``BatchRenderer`` of the send steps)."""
        return PooledRenderer(self, renderer)

    def _key(self, renderer: MailRenderer) -> int:
        ident = id(renderer._compiled)  # noqa: SLF001 - the identity of the renderer its copies share
        with self._lock:
            if ident not in self._keys:
                self._keys[ident] = (len(self._keys) + 1, renderer)
            return self._keys[ident][0]

    def _executor_for_batch(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            return self._executor

    def render_batch(self, renderer: MailRenderer, jobs: Iterable[MailJob]) -> list[RenderedMail]:
        """The mails ``renderer`` renders for ``jobs``, in their order; in the workers when there are at least
        ``min_batch`` of them and more than one worker."""
        jobs = list(jobs)
        if len(jobs) < self.min_batch or self.workers < 2:
            return renderer.render_batch(jobs)
        tasks = self._submit(renderer, jobs)
        try:
            return self._collect(tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    def render_chunks(
        self, renderer: MailRenderer, chunks: Iterable[list[MailJob]], *, total: int, ahead: int = 2
    ) -> Iterator[list[RenderedMail]]:
        """The mails of each chunk of jobs, chunk by chunk, as ``render_batch`` renders them; the workers
        render up to ``ahead`` chunks beyond the one the caller is taking (so they do not wait while it writes
        a chunk away; memory holds at most that many chunks of mails). ``total``: the jobs in all chunks;
        fewer than ``min_batch`` render in this process."""
        if total < self.min_batch or self.workers < 2:
            for chunk in chunks:
                yield renderer.render_batch(chunk)
            return
        pending: collections.deque[list[Future[list[RenderedMail]]]] = collections.deque()
        source = iter(chunks)
        try:
            while True:
                while len(pending) <= ahead and (chunk := next(source, None)) is not None:
                    pending.append(self._submit(renderer, chunk))
                if not pending:
                    return
                yield self._collect(pending.popleft())
        finally:  # a failure, or the caller stopped taking: nothing more is rendered for it
            for tasks in pending:
                for task in tasks:
                    task.cancel()

    def _submit(self, renderer: MailRenderer, jobs: list[MailJob]) -> list[Future[list[RenderedMail]]]:
        key = self._key(renderer)
        recipe = (renderer.shop, renderer.signer, renderer.templates_dir, renderer.campaigns)
        now = renderer._fixed_now  # noqa: SLF001 - the logical time the mails are rendered at
        executor = self._executor_for_batch()
        return [
            executor.submit(_render_task, key, recipe, now, jobs[start : start + self.task_size])
            for start in range(0, len(jobs), self.task_size)
        ]

    def _collect(self, tasks: list[Future[list[RenderedMail]]]) -> list[RenderedMail]:
        mails: list[RenderedMail] = []
        for task in tasks:  # in the jobs' order: the first failure among them is raised
            mails.extend(task.result())
        self.pooled_mails += len(mails)
        return mails


class PooledRenderer:
    """A renderer whose ``render_batch`` goes through a ``RenderPool``."""

    def __init__(self, pool: RenderPool, renderer: MailRenderer) -> None:
        self.pool = pool
        self.renderer = renderer

    def render_batch(self, jobs: Iterable[MailJob]) -> list[RenderedMail]:
        return self.pool.render_batch(self.renderer, jobs)

    def render_chunks(self, chunks: Iterable[list[MailJob]], *, total: int) -> Iterator[list[RenderedMail]]:
        return self.pool.render_chunks(self.renderer, chunks, total=total)
