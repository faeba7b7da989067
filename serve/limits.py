"""Request throttling in the Ingress: failed sign-ins per username and client, uploads per token.

The counters live in each Ingress replica's memory, and each replica enforces its share of the configured limit
(the limit divided by `ingress_replicas`, at least 1). Whatever replicas Serve sends someone's requests to, the
platform as a whole never lets more through than the configured limit; with several replicas a client that
happens to hit one replica is stopped earlier. Chosen over counters in the catalog actor because a failed
sign-in then costs no extra catalog call and a catalog restart does not matter: the windows are minutes long.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from cluster.config import Settings
from pipelines.errors import RateLimited

MAX_KEYS = 100_000  # above this many keys, expired ones are dropped before a new one is added


class SlidingWindow:
    """At most `limit` events per key in any `window_s` seconds; `limit` 0 means no limit."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._events: dict[Hashable, deque[float]] = {}

    def retry_after(self, key: Hashable) -> float:
        """Seconds until one more event of `key` is allowed: 0 when it is allowed now."""
        if self.limit <= 0:
            return 0.0
        events = self._recent(key, self.clock())
        if events is None or len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.window_s - self.clock())

    def hit(self, key: Hashable) -> None:
        """Count one event of `key` now."""
        if self.limit <= 0:
            return
        now = self.clock()
        events = self._recent(key, now)
        if events is None:
            if len(self._events) >= MAX_KEYS:
                self._forget_expired(now)
            events = self._events[key] = deque(maxlen=self.limit)
        events.append(now)

    def clear(self, key: Hashable) -> None:
        self._events.pop(key, None)

    def __len__(self) -> int:
        return len(self._events)

    def _recent(self, key: Hashable, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def _forget_expired(self, now: float) -> None:
        for key in [key for key, events in self._events.items() if events[-1] <= now - self.window_s]:
            del self._events[key]


def share_of(limit: int, replicas: int) -> int:
    """One replica's share of a platform-wide limit: never above the limit in total, never 0 unless off."""
    if limit <= 0:
        return 0
    return max(1, limit // max(1, replicas))


@dataclass
class Limits:
    """The throttles one Ingress replica enforces (see the module docstring for the replica split)."""

    logins: SlidingWindow
    uploads: SlidingWindow

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float] = time.monotonic) -> Limits:
        replicas = settings.ingress_replicas
        return cls(
            logins=SlidingWindow(
                share_of(settings.login_max_failures, replicas), settings.login_failure_window_s, clock
            ),
            uploads=SlidingWindow(share_of(settings.upload_requests_per_minute, replicas), 60.0, clock),
        )

    def check_login(self, username: str, client: str) -> None:
        """Refuse a sign-in attempt while this username has too many recent failures from this client."""
        wait = self.logins.retry_after(_login_key(username, client))
        if wait > 0:
            raise RateLimited(
                f"Too many failed sign-ins for '{username}' from this address. Wait {_in_words(wait)} and try "
                "again, or ask the operator to reset the password.",
                extra={"retry_after": math.ceil(wait)},
            )

    def login_failed(self, username: str, client: str) -> None:
        self.logins.hit(_login_key(username, client))

    def login_succeeded(self, username: str, client: str) -> None:
        self.logins.clear(_login_key(username, client))

    def check_upload(self, token_id: str) -> None:
        """Count one upload request of this token, or refuse it when the token is over its rate."""
        wait = self.uploads.retry_after(token_id)
        if wait > 0:
            raise RateLimited(
                f"This token sent more than {self.uploads.limit} uploads in a minute. Wait {_in_words(wait)}, "
                "or send many pictures in one request (several files, or a zip to /imports).",
                extra={"retry_after": math.ceil(wait)},
            )
        self.uploads.hit(token_id)


def _login_key(username: str, client: str) -> tuple[str, str]:
    return username.strip().lower(), client


def _in_words(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return f"{whole} second{'s' if whole != 1 else ''}"
    return f"{math.ceil(whole / 60)} minutes"
