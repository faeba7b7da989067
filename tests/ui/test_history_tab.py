"""The History tab: the field-accuracy alert up front, figures and charts from /stats, the classified pictures
with filters, pages and Right / Wrong."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import (
    TOKEN,
    FakeApi,
    assert_no_exception,
    field_accuracy,
    make_model,
    make_model_stats,
    make_task,
    make_version,
    signed_in_app,
    texts,
)
from ui import state
from ui.api_types import TasksPage

PAGE = "views/model.py"
ALERT = (
    "Version 2 is right on 50% of the 20 answers you checked, clearly below the 88% measured on the test pictures. "
    "The pictures it gets now may differ from the training pictures: add some of the corrected ones to the "
    "dataset and train again."
)


@pytest.fixture
def used(api: FakeApi) -> FakeApi:
    """Version 2 answers; 45 pictures classified, the newest checked as right."""
    api.returns("get_model", make_model(status="ready", active_version=2))
    api.returns("list_versions", [make_version(2), make_version(1, active=False)])
    api.returns("model_stats", make_model_stats(alert=ALERT))
    tasks = [make_task("tsk_0", feedback={"correct": True, "label": "cat"})]
    tasks += [make_task(f"tsk_{i}", "dog", 0.4 if i == 1 else 0.9) for i in range(1, 45)]

    def list_tasks(token, model_id, *, version=None, feedback=None, limit=20, offset=0, **_):
        return TasksPage(data=tasks[offset : offset + limit], count=len(tasks))

    api.answers_with("list_tasks", list_tasks)
    return api


def history_tab() -> AppTest:
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    app.session_state[state.MODEL_TAB] = "History"
    app.run()
    assert_no_exception(app)
    return app


def charts(app: AppTest) -> list:
    return app.get("arrow_vega_lite_chart") + app.get("vega_lite_chart")


def last_tasks_call(api: FakeApi) -> dict:
    return api.called("list_tasks")[-1][1]


def test_the_alert_figures_and_charts(used: FakeApi) -> None:
    app = history_tab()

    assert app.error[0].value == ALERT  # first thing on the tab
    assert used.called("model_stats") == [((TOKEN, "mdl_1"), {"days": 30})]
    assert [(m.label, m.value) for m in app.metric] == [
        ("Pictures classified", "42"),
        ("Not sure", "14.3%"),
        ("Typical answer time", "14 ms"),
        ("Right in use (version 2)", "50.0%"),
    ]
    assert len(charts(app)) == 2, "pictures per day, and right in use next to the test accuracy"
    assert "87.5% on the test pictures" in texts(app)

    app.toggle(key="history.per_hour").set_value(True).run()
    assert_no_exception(app)
    assert len(charts(app)) == 2


def test_without_checks_the_tab_says_how_to_get_the_accuracy_in_use(used: FakeApi) -> None:
    unchecked = {"version": 2, "tasks": 42, "evaluated_accuracy": 0.875, "field": field_accuracy(0, 0)}
    used.returns("model_stats", make_model_stats(versions=[unchecked]))
    app = history_tab()

    assert [e.value for e in app.error] == []
    assert "Mark answers Right or Wrong" in texts(app)
    assert len(charts(app)) == 1


def test_the_table_pages_and_filters(used: FakeApi) -> None:
    app = history_tab()

    assert last_tasks_call(used) == {"version": None, "feedback": None, "limit": 20, "offset": 0}
    page = texts(app)
    assert "Pictures 1–20 of 45" in page
    assert ":green[:material/check: right]" in page  # tsk_0 was confirmed
    assert "dog · :orange[not sure]" in page  # tsk_1
    assert app.button(key="history.newer").disabled

    app.button(key="history.older").click().run()
    assert last_tasks_call(used)["offset"] == 20
    app.button(key="history.older").click().run()
    assert "Pictures 41–45 of 45" in texts(app)
    assert app.button(key="history.older").disabled

    app.selectbox(key="history.feedback").set_value("none").run()  # a filter starts again at the first page
    assert last_tasks_call(used) == {"version": None, "feedback": "none", "limit": 20, "offset": 0}
    app.selectbox(key="history.version").set_value(1).run()
    assert last_tasks_call(used)["version"] == 1


def test_right_and_wrong_from_the_table(used: FakeApi) -> None:
    used.returns("give_feedback", make_task("tsk_2", "dog", feedback={"correct": False, "label": "cat"}))
    app = history_tab()

    app.selectbox(key="history.tsk_2.label").set_value("cat")
    app.button(key="history.tsk_2.correct").click().run()

    assert_no_exception(app)
    assert used.called("give_feedback") == [((TOKEN, "tsk_2"), {"correct": None, "label": "cat"})]
    assert ":red[:material/close: wrong], it is 'cat'" in texts(app)


def test_nothing_classified_yet(api: FakeApi) -> None:
    api.returns("get_model", make_model(status="ready", active_version=2))
    api.returns("list_versions", [make_version(2)])
    api.returns("model_stats", make_model_stats(tasks=0, versions=[], per_day=[], per_hour=[]))
    api.returns("list_tasks", TasksPage(data=[], count=0))
    app = history_tab()

    assert "Nothing classified in the last 30 days." in texts(app)
    assert any(i.value.startswith("Nothing classified yet.") for i in app.info)
    assert app.metric == [] and charts(app) == []


def test_a_refusal_is_one_sentence(used: FakeApi) -> None:
    used.fails("model_stats", "The Classifly API does not answer", "Start the platform with 'make run'.")
    app = history_tab()

    assert [e.value for e in app.error] == ["The Classifly API does not answer"]
