"""Per-client limits held by one server process: a rate (a token bucket for each client
address) and the requests one address may have in flight at once.

Each address may send ``rate`` requests per second on average and ``burst`` at once; past that
a request is refused with the seconds after which the next one is allowed. The table of buckets
is bounded: addresses idle long enough to have a full bucket again are forgotten first. The
in-flight count keeps one client holding many stalled uploads from taking every connection.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets by client address.

    Args:
        rate: requests per second allowed on average (0: no limit).
        burst: requests allowed at once (default: 4 seconds' worth, at least 1).
        max_clients: addresses remembered at most.
    """

    def __init__(self, rate: float, *, burst: float | None = None, max_clients: int = 10_000):
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else 4 * rate)
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, *, now: float | None = None) -> float | None:
        """Take one request from ``client``'s bucket: None when allowed, else the seconds to
        wait before the next request is."""
        if self.rate <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= self.max_clients:
                    self._forget_idle(now)
                bucket = self._buckets[client] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return None
            return (1 - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full = self.burst / self.rate
        idle = [key for key, b in self._buckets.items() if now - b.stamp >= full]
        for key in idle or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


class InFlight:
    """Requests in flight per client address.

    Args:
        limit: requests one address may have in flight at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, client: str) -> bool:
        """Count a new request of ``client``; False (and not counted) when it is at the limit."""
        with self._lock:
            count = self._counts.get(client, 0)
            if count >= self.limit:
                return False
            self._counts[client] = count + 1
            return True

    def leave(self, client: str) -> None:
        """A request counted by :meth:`enter` ended."""
        with self._lock:
            count = self._counts.get(client, 0) - 1
            if count > 0:
                self._counts[client] = count
            else:
                self._counts.pop(client, None)
