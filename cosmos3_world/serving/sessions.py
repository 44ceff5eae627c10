"""Worlds kept between calls by session id, bounded in number and in idle time so abandoned ones cannot leak."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .protocol import RequestError


class SessionStore:
    """At most `max_sessions` worlds (the least recently used is dropped first), each forgotten `ttl_s` after its
    last use. Thread-safe; `clock` is injectable for tests."""

    def __init__(self, max_sessions: int = 256, ttl_s: float = 600.0, clock: Callable[[], float] = time.monotonic):
        if max_sessions < 1 or ttl_s <= 0:
            raise ValueError(f"max_sessions must be >= 1 and ttl_s > 0, got {max_sessions} and {ttl_s}")
        self.max_sessions, self.ttl_s, self.clock = max_sessions, ttl_s, clock
        self._worlds: OrderedDict[str, tuple[Any, float]] = OrderedDict()  # id -> (world, last use), oldest first
        self._lock = threading.Lock()

    def put(self, session_id: str, world: Any) -> None:
        """Start (or restart) a session; the least recently used one goes when the store is full."""
        with self._lock:
            self._expire()
            self._worlds.pop(session_id, None)
            self._worlds[session_id] = (world, self.clock())
            while len(self._worlds) > self.max_sessions:
                self._worlds.popitem(last=False)

    def get(self, session_id: str) -> Any:
        """The session's world (marking it used); RequestError when it never existed or has expired."""
        with self._lock:
            self._expire()
            entry = self._worlds.pop(session_id, None)
            if entry is None:
                raise RequestError(f"unknown or expired session {session_id!r}: start it with endpoint 'reset'")
            self._worlds[session_id] = (entry[0], self.clock())
            return entry[0]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._worlds)

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl_s
        while self._worlds and next(iter(self._worlds.values()))[1] < cutoff:
            self._worlds.popitem(last=False)
