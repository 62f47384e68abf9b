"""In-memory limits of one cloud process: requests per user at once, and logins per client and overall.

These are per process (a zone's cloud is one process; several would each hold their own budget,
which is still a bound). They are pure bookkeeping with an injectable clock, so tests drive them
without sleeping.

Login policy (why lock-out is not a weapon):

- per client address, failed logins of *any* user name within the window are counted: past
  ``client_failures`` that address gets 429 (random user names do not escape it);
- all attempts together draw from one token bucket (``global_rate``/s, burst ``global_burst``): past
  it, 429 for everyone for a moment, so a flood cannot queue unbounded argon2 work;
- the password check itself runs at most ``Passwords.max_concurrent`` at a time (memory: that many
  times argon2's 64 MiB);
- a user name is **never locked** for everyone: after ``max_user_failures`` failures of the name
  from all clients, every attempt on it is answered only after a delay growing with the failures
  (``name_delay_s``, at most ``max_name_delay_s``). The real user, from an address that has not been
  guessing, still logs in — a few seconds later; an attacker's guesses on the name are slowed, and
  bounded overall by the per-client and global budgets. Only the guessing address itself is refused
  for that name (``login_max_failures`` per user and client, in ``Accounts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import multiprocessing
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")

Clock = Callable[[], float]


class ConcurrencyLimiter:
    """At most ``per_key`` holders per key at once (requests of one user)."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._held: dict[object, int] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def try_acquire(self, key: object) -> bool:
        with self._lock:
            n = self._held.get(key, 0)
            if n >= self.per_key:
                self.refused += 1
                return False
            self._held[key] = n + 1
            return True

    def release(self, key: object) -> None:
        with self._lock:
            n = self._held.get(key, 0) - 1
            if n <= 0:
                self._held.pop(key, None)
            else:
                self._held[key] = n

    def held(self, key: object) -> int:
        with self._lock:
            return self._held.get(key, 0)


class Lane:
    """A few worker threads at a lower CPU priority, for work that must not starve cheap requests.

    Password checks (argon2 keeps ``parallelism`` cores busy for tens of ms) and expensive queries
    (KPIs over weeks of shifts) run here instead of in the shared thread pool: the threads are
    ``nice``-d (on Linux the nice value is per thread, and argon2's own threads inherit it), so the
    scheduler serves a chart request first; and there are only ``workers`` of them, so a flood of
    such work queues (bounded by the caller's semaphore) instead of taking every thread.
    """

    def __init__(self, name: str, workers: int, nice: int = 10) -> None:
        self.name, self.workers, self.nice = name, workers, nice
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _lower_priority(self) -> None:
        # Not Linux, or not allowed: the lane runs at normal priority.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"spinline-{self.name}",
                                                initializer=self._lower_priority)
            pool = self._pool
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def _lower_process_priority(nice: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.nice(nice)


class ProcessLane(Executor):
    """A few worker processes at a lower CPU priority, for CPU work in Python (KPIs over many windows).

    A ``Lane`` thread keeps the scheduler's priority low but not the GIL: while it computes, the
    event loop and the cheap requests' threads wait for the interpreter lock (and wait longer still
    when the scheduler has preempted the nice'd thread *holding* it). In a worker process the work
    has its own interpreter. Workers are started (``spawn``: no fork of a threaded process) on
    first use, so an app that never computes KPIs starts none; a worker that died is replaced at
    the next submit instead of leaving the pool broken for good. ``started`` counts pools started.
    """

    def __init__(self, name: str, workers: int, nice: int = 10) -> None:
        self.name, self.workers, self.nice = name, workers, nice
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.started = 0

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_lower_process_priority, initargs=(self.nice,))
                self.started += 1
            return self._pool

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        pool = self._current()
        try:
            return pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            return self._current().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def close(self) -> None:
        """Stop the workers without waiting (queued work is dropped; a running job ends on its own)."""
        self.shutdown(wait=False, cancel_futures=True)


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take()`` answers 0 or the seconds until a token."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


class WindowCounter:
    """Events per key within a sliding window; at most ``max_keys`` keys kept (oldest forgotten)."""

    def __init__(self, window_s: float, max_keys: int = 100_000, clock: Clock = time.monotonic) -> None:
        self.window_s, self.max_keys, self.clock = window_s, max_keys, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _fresh(self, key: str, now: float) -> deque[float]:
        q = self._events.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def count(self, key: str) -> tuple[int, float]:
        """(events in the window, seconds until the oldest leaves it)."""
        with self._lock:
            now = self.clock()
            q = self._fresh(key, now)
            return len(q), (q[0] + self.window_s - now) if q else 0.0

    def add(self, key: str, cap: int = 10_000) -> None:
        with self._lock:
            now = self.clock()
            q = self._fresh(key, now)
            q.append(now)
            while len(q) > cap:
                q.popleft()
            self._events[key] = q
            self._events.move_to_end(key)
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


def name_delay_s(failures: int, threshold: int, max_delay_s: float) -> float:
    """Seconds to wait before checking a login for a name with ``failures`` recent failures (all clients).

    0 below ``threshold``; then 1 s, growing by half a second per further failure, capped.

    >>> name_delay_s(19, 20, 10), name_delay_s(20, 20, 10), name_delay_s(24, 20, 10), name_delay_s(500, 20, 10)
    (0.0, 1.0, 3.0, 10)
    """
    if failures < threshold:
        return 0.0
    return min(max_delay_s, 1.0 + 0.5 * (failures - threshold))


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
