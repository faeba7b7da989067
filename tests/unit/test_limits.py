"""Throttles of the Ingress on a fake clock: sliding windows, the per-replica share, the errors they raise."""

from __future__ import annotations

import pytest

from cluster.config import Settings
from pipelines.errors import RateLimited
from serve import limits as limits_module
from serve.limits import Limits, SlidingWindow, share_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_allows_the_limit_then_says_how_long_to_wait() -> None:
    clock = Clock()
    window = SlidingWindow(3, 60.0, clock)
    for step in range(3):
        assert window.retry_after("k") == 0
        window.hit("k")
        clock.now += 10 if step < 2 else 0

    assert window.retry_after("k") == pytest.approx(40.0)  # the first hit (t=0) leaves the window at t=60
    assert window.retry_after("other") == 0
    clock.now += 40
    assert window.retry_after("k") == 0


def test_old_events_leave_the_window_one_by_one() -> None:
    clock = Clock()
    window = SlidingWindow(2, 10.0, clock)
    window.hit("k")
    clock.now += 6
    window.hit("k")
    clock.now += 5  # the first is 11 s old, the second 5 s

    assert window.retry_after("k") == 0
    window.hit("k")
    assert window.retry_after("k") == pytest.approx(5.0)  # the hit at 6 s leaves at 16 s


def test_clear_forgets_a_key_and_zero_means_no_limit() -> None:
    clock = Clock()
    window = SlidingWindow(1, 60.0, clock)
    window.hit("k")
    assert window.retry_after("k") > 0
    window.clear("k")
    assert window.retry_after("k") == 0

    unlimited = SlidingWindow(0, 60.0, clock)
    for _ in range(1000):
        unlimited.hit("k")
    assert unlimited.retry_after("k") == 0
    assert len(unlimited) == 0


def test_memory_stays_bounded_by_dropping_expired_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits_module, "MAX_KEYS", 100)
    clock = Clock()
    window = SlidingWindow(5, 10.0, clock)
    for key in range(100):
        window.hit(key)
    clock.now += 11

    window.hit("new")

    assert len(window) == 1


@pytest.mark.parametrize(
    ("limit", "replicas", "share"),
    [
        pytest.param(10, 1, 10, id="one-replica"),
        pytest.param(10, 3, 3, id="rounded-down"),
        pytest.param(2, 5, 1, id="never-zero"),
        pytest.param(0, 4, 0, id="off-stays-off"),
    ],
)
def test_each_replica_enforces_its_share(limit: int, replicas: int, share: int) -> None:
    assert share_of(limit, replicas) == share


def test_limits_come_from_the_settings_divided_among_replicas() -> None:
    settings = Settings(
        _env_file=None,
        environment="test",
        ingress_replicas=2,
        login_max_failures=6,
        login_failure_window_s=120,
        upload_requests_per_minute=100,
    )

    limits = Limits.from_settings(settings)

    assert (limits.logins.limit, limits.logins.window_s) == (3, 120)
    assert (limits.uploads.limit, limits.uploads.window_s) == (50, 60.0)


def test_login_lockout_is_per_username_and_client_and_says_when_to_retry() -> None:
    clock = Clock()
    limits = Limits(logins=SlidingWindow(2, 300.0, clock), uploads=SlidingWindow(0, 60.0, clock))
    limits.login_failed("Alice", "10.0.0.1")
    limits.login_failed("alice ", "10.0.0.1")  # the catalog compares usernames without case

    with pytest.raises(RateLimited) as refused:
        limits.check_login("alice", "10.0.0.1")

    assert refused.value.status == 429
    assert refused.value.extra == {"retry_after": 300}
    assert "5 minutes" in refused.value.detail
    limits.check_login("alice", "10.0.0.2")
    limits.check_login("bob", "10.0.0.1")
    limits.login_succeeded("alice", "10.0.0.1")
    limits.check_login("alice", "10.0.0.1")


def test_uploads_are_counted_when_allowed_and_refused_over_the_rate() -> None:
    clock = Clock()
    limits = Limits(logins=SlidingWindow(0, 300.0, clock), uploads=SlidingWindow(2, 60.0, clock))
    limits.check_upload("tok_a")
    clock.now += 30
    limits.check_upload("tok_a")

    with pytest.raises(RateLimited) as refused:
        limits.check_upload("tok_a")

    assert refused.value.extra == {"retry_after": 30}
    assert "30 seconds" in refused.value.detail
    limits.check_upload("tok_b")
    clock.now += 30
    limits.check_upload("tok_a")  # the refused request was not counted
