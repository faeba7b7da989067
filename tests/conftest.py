"""Fixtures shared by every test level: the markers, and the guard that keeps Ray out of unmarked tests."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts a real local Ray (integration tests only)")
    config.addinivalue_line("markers", "browser: drives a real headless browser")


class RayStartedError(RuntimeError):
    """Raised when a test that is not marked `@pytest.mark.ray` tries to start Ray."""


def _refuse(start: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(start)
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RayStartedError("This test started Ray. Mark it @pytest.mark.ray and move it to tests/integration/.")

    return refused


@pytest.fixture(autouse=True)
def _no_ray_unless_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail an unmarked test that starts Ray: it would take seconds and leak a cluster into later tests.

    Importing ray costs about a second, so the guard never imports it: when ray is already loaded its `init`
    (which `ray.remote(...).remote()` also goes through) is replaced; when a test imports it itself, the
    check after the test still catches a Ray that was started.
    """
    if request.node.get_closest_marker("ray") is not None:
        yield
        return
    ray = sys.modules.get("ray")
    running_before = ray is not None and ray.is_initialized()
    if ray is not None:
        monkeypatch.setattr(ray, "init", _refuse(ray.init))
        monkeypatch.setattr(ray._private.worker, "init", _refuse(ray._private.worker.init))
    yield
    ray = sys.modules.get("ray")
    if ray is not None and not running_before and ray.is_initialized():
        ray.shutdown()
        pytest.fail("This test started Ray. Mark it @pytest.mark.ray and move it to tests/integration/.")
