"""The Train tab: start a training (with or without advanced choices), follow it live (progress, leaderboard,
curves, cancel), what became of it (summary, or failure with Resume), and the list of past trainings."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import (
    TOKEN,
    FakeApi,
    assert_no_exception,
    make_model,
    make_run,
    signed_in_app,
    texts,
)
from ui import state
from ui.api_types import Run, TrainOptions

PAGE = "views/model.py"
SUMMARY = "Version 1 is ready: 95.0% of the test pictures right (Pretrained EfficientNet-Lite0), found in 42 s."
DONE = {"stage": "done", "fraction": 1.0, "message": SUMMARY}


@pytest.fixture
def model(api: FakeApi) -> FakeApi:
    api.returns("get_model", make_model())
    return api


def train_tab() -> AppTest:
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    app.session_state[state.MODEL_TAB] = "Train"
    app.run()
    assert_no_exception(app)
    return app


def progress_texts(app: AppTest) -> list[str]:
    return [bar.proto.text for bar in app.get("progress")]


def leaderboard(app: AppTest) -> list[dict]:
    return app.dataframe[0].value.to_dict("records")


def charts(app: AppTest) -> list:
    return app.get("arrow_vega_lite_chart") + app.get("vega_lite_chart")


def summary_only(run: Run) -> Run:
    """list_runs' items carry no trials."""
    return Run.model_validate(run.model_dump())


def test_no_training_yet_shows_the_goal_and_one_button_and_starts_a_run(model: FakeApi) -> None:
    started: list[Run] = []
    model.answers_with("list_runs", lambda *args: started)
    model.answers_with("start_training", lambda *args: started.append(summary_only(make_run("queued"))))
    model.returns("get_run", make_run("queued", trials=[], progress={"stage": "queued", "fraction": 0.0}))
    app = train_tab()

    page = texts(app)
    assert "**Goal:** 90% of pictures right · **time:** at most 10 minutes" in page
    assert app.button(key="train.start").label == "Train"
    assert model.called("get_run") == []  # nothing to follow, no past trainings
    app.button(key="train.start").click().run()

    assert_no_exception(app)
    assert model.called("start_training") == [((TOKEN, "mdl_1", TrainOptions()), {})]
    assert progress_texts(app) == ["Waiting for the cluster to start the training …"]
    assert app.button(key="train.cancel").label == "Cancel training"
    assert "The candidate models appear here as soon as the first one starts learning." in texts(app)


def test_advanced_choices_go_with_the_run(model: FakeApi) -> None:
    model.returns("list_runs", [])
    model.fails("start_training", "Not enough pictures", "Add a few more pictures to 'cat'.", status=422)
    app = train_tab()

    app.number_input(key="train.minutes").set_value(30)
    app.number_input(key="train.epochs").set_value(5)
    app.number_input(key="train.batch").set_value(32)
    app.multiselect(key="train.kinds").set_value(["frozen_head"])
    app.multiselect(key="train.backbones").set_value(["efficientnet_lite2"])
    app.checkbox(key="train.augmentation").uncheck()
    app.button(key="train.start").click().run()

    ((args, _),) = model.called("start_training")
    assert args[2] == TrainOptions(
        time_budget_s=1800,
        max_epochs=5,
        batch_size=32,
        kinds=["frozen_head"],
        backbones=["efficientnet_lite2"],
        augmentation=False,
    )
    assert [e.value for e in app.error] == ["Not enough pictures"]  # a refusal is one sentence, not a traceback
    assert "Add a few more pictures to 'cat'." in [c.value for c in app.caption]


def test_a_running_training_shows_progress_leaderboard_curves_and_can_be_cancelled(model: FakeApi) -> None:
    running = make_run("running")
    model.returns("list_runs", [summary_only(running)])
    model.returns("get_run", running)
    model.answers_with("cancel_run", lambda *args: model.returns("get_run", make_run(cancel_requested=True)))
    app = train_tab()

    assert progress_texts(app) == ["Trying candidate models (1 of 2 done) · best so far 95.0% · about 4 minutes left"]
    rows = leaderboard(app)
    assert [(r["candidate"], r["status"], r["accuracy"], r["epochs"]) for r in rows] == [
        ("Pretrained EfficientNet-Lite0 features + simple classifier", "done", 0.95, 3),
        ("Small CNN trained from scratch on your pictures", "stopped early", 0.6, 2),
    ]
    assert rows[1]["why it stopped"] == "stopped early: others were clearly better"
    assert len(charts(app)) == 1, "the accuracy curves"
    assert app.get("button") and not any(b.key == "train.start" for b in app.button)  # one training at a time

    app.button(key="train.cancel").click().run()

    assert_no_exception(app)
    assert model.called("cancel_run") == [((TOKEN, "run_1"), {})]
    assert "Stopping … The model keeps answering with the version it had." in texts(app)
    assert not any(b.key == "train.cancel" for b in app.button)


def test_a_refused_cancel_says_why(model: FakeApi) -> None:
    model.returns("list_runs", [summary_only(make_run())])
    model.returns("get_run", make_run())
    model.fails("cancel_run", "Conflict", "Run 'run_1' is already succeeded.", status=409)
    app = train_tab()

    app.button(key="train.cancel").click().run()

    assert [e.value for e in app.error] == ["Conflict"]


def test_when_the_followed_training_ends_the_page_shows_its_summary(model: FakeApi) -> None:
    runs = [summary_only(make_run())]
    model.answers_with("list_runs", lambda *args: runs)
    model.returns("get_run", make_run())
    app = train_tab()
    assert progress_texts(app)

    finished = make_run("succeeded", progress=DONE, result={"summary": SUMMARY, "reached_target": True})
    runs[:] = [summary_only(finished)]
    model.returns("get_run", finished)
    app.run()

    assert_no_exception(app)
    assert progress_texts(app) == []
    assert SUMMARY in [s.value for s in app.success]


def test_a_finished_training_shows_its_summary_candidates_and_past_trainings(model: FakeApi) -> None:
    finished = make_run(
        "succeeded",
        progress=DONE,
        result={
            "summary": SUMMARY,
            "version": 1,
            "accuracy": 0.85,
            "reached_target": False,
            "step_seconds": {"preparing": 12.4, "searching": 220.0, "testing": 3.2, "label_check": 0.1},
        },
        finished_at="2026-05-01T12:01:40Z",
    )
    model.returns("list_runs", [summary_only(finished)])
    model.returns("get_run", finished)
    app = train_tab()

    assert SUMMARY in [s.value for s in app.success]
    assert "It did not reach the goal of 90%. More pictures per class, or more time, usually help." in texts(app)
    assert (
        "Where the time went: reading the pictures 12 s · trying candidate models 3 min 40 s · "
        "checking on the test pictures 3 s." in [c.value for c in app.caption]
    )
    assert app.button(key="train.start")  # train again
    assert any(e.label == "The 2 candidate models of this training" for e in app.expander)
    assert len(charts(app)) == 1
    past = app.dataframe[1].value.to_dict("records")
    assert [(r["outcome"], r["pictures"], r["took"], r["what happened"]) for r in past] == [
        ("finished", 12, 100.0, SUMMARY)
    ]


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        pytest.param(
            "failed",
            {"code": "invalid_input", "title": "Invalid input", "detail": "Give the model more time."},
            "Give the model more time.",
            id="failed",
        ),
        pytest.param("interrupted", None, "was interrupted: the platform stopped before it finished", id="interrupted"),
    ],
)
def test_a_stopped_training_says_why_and_can_be_resumed(
    model: FakeApi, status: str, error: dict | None, words: str
) -> None:
    stopped = make_run(status, error=error)
    model.returns("list_runs", [summary_only(stopped)])
    model.returns("get_run", stopped)
    model.returns("resume_run", summary_only(make_run("queued")))
    app = train_tab()

    assert words in texts(app)
    app.button(key="train.resume").click().run()

    assert model.called("resume_run") == [((TOKEN, "run_1"), {})]


def test_a_cancelled_training_says_the_model_kept_its_version(model: FakeApi) -> None:
    cancelled = make_run("cancelled", trials=[], progress={"stage": "cancelled", "message": "Stopped."})
    model.returns("list_runs", [summary_only(cancelled)])
    model.returns("get_run", cancelled)
    app = train_tab()

    assert any("was cancelled. The model answers with the version it had." in i.value for i in app.info)
    assert not any(b.key == "train.resume" for b in app.button)
