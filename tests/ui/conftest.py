"""Page tests: each page runs in AppTest through the real frame (ui/app.py), with `ui.api_client` faked.

`api` replaces every endpoint function with one that fails the test unless the test said what it returns, so
no page test reaches the network and every call a page makes is deliberate.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
import streamlit_authenticator.params
from streamlit.testing.v1 import AppTest

from tests.factories import make_image
from ui import api_client, state
from ui.api_client import ApiError
from ui.api_types import (
    Classification,
    ClassInfo,
    DatasetStats,
    Image,
    ImagesPage,
    Job,
    Model,
    ModelStats,
    Problem,
    Progress,
    RunDetail,
    Task,
    User,
    Version,
)

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
TOKEN = "cfs_test-session"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NOT_ENDPOINTS = {"api_url"}  # reads the environment, no HTTP: pages may call it for real
ENDPOINTS = [
    name
    for name, value in vars(api_client).items()
    if inspect.isfunction(value) and value.__module__ == api_client.__name__
    if not name.startswith("_") and name not in NOT_ENDPOINTS
]


@dataclass
class FakeApi:
    """The API as a page sees it: canned answers per endpoint, and a record of every call."""

    calls: list[tuple[str, tuple, dict]] = field(default_factory=list)
    answers: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def returns(self, name: str, value: Any) -> None:
        self.answers[name] = lambda *args, **kwargs: value

    def answers_with(self, name: str, fn: Callable[..., Any]) -> None:
        self.answers[name] = fn

    def fails(self, name: str, title: str, detail: str = "What to do.", status: int = 400, code: str = "x") -> None:
        problem = Problem(title=title, detail=detail, status=status, code=code)

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise ApiError(problem)

        self.answers[name] = fail

    def called(self, name: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for called, args, kwargs in self.calls if called == name]

    def endpoint(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name not in self.answers:
                raise AssertionError(f"the page called api_client.{name} but the test gave it no answer")
            return self.answers[name](*args, **kwargs)

        return call


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    fake = FakeApi()
    for name in ENDPOINTS:
        monkeypatch.setattr(api_client, name, fake.endpoint(name))
    monkeypatch.setenv("CLASSIFLY_API_URL", "http://api.example:8000")
    monkeypatch.setenv("CLASSIFLY_UI_SECRET", "s" * 48)
    # streamlit-authenticator waits 0.7 s before each login form it draws; nothing here needs the wait.
    monkeypatch.setattr(streamlit_authenticator.params, "PRE_LOGIN_SLEEP_TIME", 0.0)
    st.cache_data.clear()
    yield fake
    st.cache_data.clear()


def signed_in_app(page: str | None = None, *, admin: bool = False, query: dict[str, str] | None = None) -> AppTest:
    """The app with a signed-in user, on `page` (e.g. "views/tokens.py"); call .run() next."""
    app = AppTest.from_file(APP, default_timeout=15)
    app.session_state[state.API_TOKEN] = TOKEN
    app.session_state[state.USER] = User(id="usr_alice", username="alice", is_admin=admin)
    for name, value in (query or {}).items():
        app.query_params[name] = value
    if page:
        app.switch_page(page)
    return app


def texts(app: AppTest) -> str:
    """Every piece of text on the page, to assert on what a person reads."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "success", "info", "warning", "error", "text"):
        parts += [str(element.value) for element in getattr(app, kind)]
    parts += [str(element.label) for element in app.button]
    return "\n".join(parts)


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]


# --- factories of API answers -----------------------------------------------------------------------------------


def make_model(model_id: str = "mdl_1", name: str = "Flowers", **overrides: Any) -> Model:
    values = {
        "id": model_id,
        "name": name,
        "description": "",
        "status": "ready_to_train",
        "target_accuracy": 0.9,
        "time_budget_s": 600,
        "num_classes": 2,
        "num_images": 12,
        "has_sample_image": False,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Model(**{**values, **overrides})


def make_classes(**counts: int) -> list[ClassInfo]:
    return [
        ClassInfo(name=name, train_images=n - n // 5, test_images=n // 5, total_images=n) for name, n in counts.items()
    ]


def make_images(label: str, count: int, first_id: int = 1) -> ImagesPage:
    data = [
        Image(
            id=first_id + i,
            label=label,
            split="train",
            status="accepted",
            original_name=f"{label}/{i}.png",
            sha256=f"{label}-{first_id + i:060d}",
            size_bytes=100,
            width=32,
            height=32,
        )
        for i in range(count)
    ]
    return ImagesPage(data=data, count=count)


def make_rejects(*reasons: str) -> ImagesPage:
    data = [
        Image(id=900 + i, label="dog", status="rejected", reject_reason=r, original_name=f"bad{i}.jpg", size_bytes=3)
        for i, r in enumerate(reasons)
    ]
    return ImagesPage(data=data, count=len(data))


def make_stats(classes: dict[str, int], warnings: list[str] | None = None, rejected: int = 0) -> DatasetStats:
    rows = [{"name": n, "train": c - c // 5, "test": c // 5, "total": c} for n, c in classes.items()]
    return DatasetStats(
        classes=rows,
        total_images=sum(classes.values()),
        train_images=sum(r["train"] for r in rows),
        test_images=sum(r["test"] for r in rows),
        rejected_images=rejected,
        rejects_by_reason=[],
        storage_bytes=12345,
        duplicates_skipped=0,
        warnings=warnings or [],
        preprocessing={"image_size": 224, "color": "rgb", "resize": "letterbox"},
    )


def make_job(status: str = "succeeded", done: int = 12, total: int = 12, result: dict | None = None, **extra) -> Job:
    return Job(
        id="job_1",
        kind="import",
        status=status,
        model_id="mdl_1",
        progress=Progress(done=done, total=total, fraction=done / total if total else 0.0),
        message=extra.pop("message", ""),
        result=result,
        error=extra.pop("error", None),
        created_at=NOW,
    )


def make_trial(trial_id: str, title: str, accuracies: list[float], status: str = "running", **extra) -> dict:
    return {
        "trial_id": trial_id,
        "title": title,
        "spec": {"kind": "frozen_head"},
        "status": status,
        "epochs": len(accuracies),
        "best_val_accuracy": max(accuracies) if accuracies else None,
        "history": [{"epoch": float(i + 1), "val_accuracy": a, "loss": 0.5} for i, a in enumerate(accuracies)],
        "cost_s": extra.pop("cost_s", 12.5),
        "stop_reason": extra.pop("stop_reason", None),
    }


TRIALS = [
    make_trial(
        "t2",
        "Pretrained EfficientNet-Lite0 features + simple classifier",
        [0.8, 0.9, 0.95],
        "finished",
        stop_reason="reached your target accuracy",
    ),
    make_trial(
        "t1",
        "Small CNN trained from scratch on your pictures",
        [0.5, 0.6],
        "stopped",
        stop_reason="stopped early: others were clearly better",
    ),
]


def make_run(status: str = "running", trials: list[dict] | None = None, **extra: Any) -> RunDetail:
    """A training run as GET /v1/runs/{id} answers (list_runs' items are the same without trials)."""
    progress = {
        "stage": "searching",
        "fraction": 0.5,
        "message": "Trying candidate models (1 of 2 done)",
        "best_accuracy": 0.95,
        "seconds_left": 250.0,
    }
    values = {
        "id": "run_1",
        "model_id": "mdl_1",
        "status": status,
        "config": {"target_accuracy": 0.9, "time_budget_s": 600, "advanced": {}},
        "progress": extra.pop("progress", progress),
        "result": None,
        "error": None,
        "cancel_requested": False,
        "num_images": 12,
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
        "url": "/v1/runs/run_1",
        "trials": TRIALS if trials is None else trials,
    }
    return RunDetail.model_validate({**values, **extra})


METRICS = {
    "accuracy": 0.875,
    "val_accuracy": 0.9,
    "class_names": ["cat", "dog"],
    "per_class": [
        {"class": "cat", "precision": 0.8, "recall": 1.0, "f1": 0.8889, "support": 4},
        {"class": "dog", "precision": 1.0, "recall": 0.75, "f1": 0.8571, "support": 4},
    ],
    "confusion_matrix": [[4, 0], [1, 3]],
    "misclassified": [{"image_id": 104, "true": "dog", "predicted": "cat", "confidence": 0.71}],
    "test_images": 8,
    "calibration": {
        "expected_error": 0.031,
        "bins": [
            {"low": 0.5, "high": 0.6, "count": 0, "confidence": 0.0, "accuracy": 0.0},
            {"low": 0.7, "high": 0.8, "count": 2, "confidence": 0.74, "accuracy": 0.5},
            {"low": 0.9, "high": 1.0, "count": 6, "confidence": 0.97, "accuracy": 1.0},
        ],
    },
    "label_mistakes": [
        {"image_id": 3, "given": "cat", "suggested": "dog", "confidence": 0.96},
        {"image_id": 5, "given": "cat", "suggested": "dog", "confidence": 0.93},
    ],
}


def make_version(version: int = 1, active: bool = True, metrics: dict | None = None, **extra: Any) -> Version:
    values = {
        "model_id": "mdl_1",
        "version": version,
        "active": active,
        "source": "training",
        "run_id": "run_1",
        "classes": ["cat", "dog"],
        "backbone": "efficientnet_lite0",
        "preprocessing": {"image_size": 224, "color": "rgb", "resize": "letterbox"},
        "metrics": METRICS if metrics is None else metrics,
        "created_at": NOW,
    }
    return Version.model_validate({**values, **extra})


def list_pet_images(token: str, model_id: str, *, label=None, status="accepted", limit=50, offset=0) -> ImagesPage:
    """6 cats (ids 1-6) and 6 dogs (ids 100-105), a page at a time; one refused file."""
    if status == "rejected":
        return make_rejects("This is not a picture.")
    everything = make_images(label or "cat", 6, first_id=100 if label == "dog" else 1)
    return ImagesPage(data=everything.data[offset : offset + limit], count=everything.count)


def make_update(status: str = "succeeded", result: dict | None = None, job_id: str = "job_up1", **extra: Any) -> Job:
    """A model update (expansion job) as GET /v1/jobs/{id} and GET /v1/models/{id}/updates answer."""
    values = {
        "id": job_id,
        "kind": "expansion",
        "status": status,
        "model_id": "mdl_1",
        "progress": extra.pop("progress", {"done": 0, "total": 0, "fraction": 0.0}),
        "message": extra.pop("message", ""),
        "result": result,
        "error": extra.pop("error", None),
        "created_at": NOW,
        "url": f"/v1/jobs/{job_id}",
    }
    return Job.model_validate({**values, **extra})


UPDATE_RESULT = {
    "version": 3,
    "summary": "Version 3 answers now (added checker): 92.0% of the test pictures right, ready in 2.1 s.",
    "changed": True,
    "added": ["checker"],
    "removed": [],
    "left_out": [],
    "accuracy": 0.92,
    "retrain_recommended": False,
    "seconds": 2.1,
}


def make_answer(name: str, label: str = "cat", confidence: float = 0.92, **extra: Any) -> dict:
    """One file's answer inside POST /v1/models/{id}/classify."""
    other = "cat" if label == "dog" else "dog"
    values = {
        "name": name,
        "task_id": f"tsk_{name}",
        "version": 2,
        "label": label,
        "confidence": confidence,
        "uncertain": confidence < 0.5,
        "top": [{"label": label, "probability": confidence}, {"label": other, "probability": 1 - confidence}],
        "error": None,
    }
    return {**values, **extra}


def make_classification(*answers: dict) -> Classification:
    failed = sum(1 for a in answers if a.get("error"))
    return Classification.model_validate(
        {
            "model_id": "mdl_1",
            "version": 2,
            "classified": len(answers) - failed,
            "failed": failed,
            "uncertain_below": 0.5,
            "latency_ms": 12.5,
            "results": list(answers),
        }
    )


def make_task(task_id: str, label: str = "cat", confidence: float = 0.9, **extra: Any) -> Task:
    values = {
        "id": task_id,
        "model_id": "mdl_1",
        "version": 2,
        "label": label,
        "confidence": confidence,
        "uncertain": confidence < 0.5,
        "top": [{"label": label, "probability": confidence}],
        "latency_ms": 8.0,
        "created_at": NOW,
        "feedback": None,
        "url": f"/v1/tasks/{task_id}",
    }
    return Task.model_validate({**values, **extra})


def field_accuracy(feedback: int, correct: int) -> dict:
    accuracy = correct / feedback if feedback else None
    return {"feedback": feedback, "correct": correct, "accuracy": accuracy, "low": 0.3, "high": 0.7}


def make_model_stats(tasks: int = 42, alert: str | None = None, **extra: Any) -> ModelStats:
    """GET /v1/models/{id}/stats: version 2 answers, 20 of its answers were checked, 10 right."""
    values = {
        "model_id": "mdl_1",
        "since": NOW,
        "tasks": tasks,
        "uncertain": 6,
        "per_hour": [{"start": NOW, "count": 30}, {"start": "2026-05-01T13:00:00", "count": 12}],
        "per_day": [{"start": "2026-04-30T00:00:00", "count": 10}, {"start": NOW, "count": 32}],
        "latency": {"p50_ms": 14.0, "p90_ms": 30.0, "p99_ms": 80.0},
        "confidence": [{"low": 0.9, "high": 1.0, "count": 36}],
        "versions": [
            {
                "version": 2,
                "tasks": tasks,
                "evaluated_accuracy": 0.875,
                "field": field_accuracy(20, 10),
                "per_class": [{"label": "cat", "tasks": 30, "field": field_accuracy(12, 6)}],
                "per_day": [
                    {"start": "2026-04-30T00:00:00", "field": field_accuracy(8, 5)},
                    {"start": NOW, "field": field_accuracy(12, 5)},
                ],
                "alert": alert,
            }
        ],
    }
    return ModelStats.model_validate({**values, **extra})


PNG = make_image(size=(8, 8))
