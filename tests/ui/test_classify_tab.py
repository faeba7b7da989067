"""The Classify tab: pictures in, for each the answer in words with its top classes as bars, "not sure" when the
model is, the version that answered, per-file problems, and Right / Wrong feedback."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import (
    PNG,
    TOKEN,
    FakeApi,
    assert_no_exception,
    make_answer,
    make_classification,
    make_model,
    make_task,
    make_version,
    signed_in_app,
    texts,
)
from ui import state

PAGE = "views/model.py"


@pytest.fixture
def trained(api: FakeApi) -> FakeApi:
    """Version 2 (cat, dog) answers; version 1 came before it."""
    api.returns("get_model", make_model(status="ready", active_version=2))
    api.returns("list_versions", [make_version(2), make_version(1, active=False)])
    return api


def classify_tab() -> AppTest:
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    app.session_state[state.MODEL_TAB] = "Classify"
    app.run()
    assert_no_exception(app)
    return app


def choose_files(app: AppTest, *names: str) -> None:
    app.file_uploader(key=state.keyed("classify.files", "mdl_1", 0)).set_value(
        [(name, PNG, "image/png") for name in names]
    ).run()


def bars(app: AppTest) -> list[str]:
    return [bar.proto.text for bar in app.get("progress")]


def test_an_untrained_model_says_to_train_first(api: FakeApi) -> None:
    api.returns("get_model", make_model())
    app = classify_tab()

    assert any(i.value.startswith("Nothing can answer yet. Train the model") for i in app.info)
    assert [name for name, _, _ in api.calls] == ["get_model"]


def test_classify_several_pictures_shows_answers_bars_version_and_problems(trained: FakeApi) -> None:
    unreadable = "'broken.jpg' is not a picture Pillow can read. Remove it or re-export it as PNG."
    problem = {"title": "Invalid input", "detail": unreadable, "code": "invalid_input"}
    trained.returns(
        "classify",
        make_classification(
            make_answer("a.png", "cat", 0.92),
            make_answer("b.png", "dog", 0.41),
            {"name": "broken.jpg", "error": problem},
        ),
    )
    app = classify_tab()
    assert app.button(key="classify.go").disabled  # nothing chosen yet

    app.slider(key="classify.top_k").set_value(2)
    choose_files(app, "a.png", "b.png", "broken.jpg")
    app.button(key="classify.go").click().run()

    assert_no_exception(app)
    ((args, kwargs),) = trained.called("classify")
    assert args == (TOKEN, "mdl_1", [("a.png", PNG), ("b.png", PNG), ("broken.jpg", PNG)])
    assert kwargs == {"top_k": 2, "version": None}  # the answering version
    page = texts(app)
    assert "**It is 'cat'** (92% sure)." in page
    assert "It looks most like 'dog' (41% sure), but it may be none of the classes this model knows." in page
    assert bars(app) == ["cat · 92%", "dog · 8%", "dog · 41%", "cat · 59%"]
    assert page.count("Answered by version 2.") == 2
    assert "This picture could not be classified." in [e.value for e in app.error]
    assert unreadable in page
    assert len(app.image) == 3  # each picture next to its answer
    # The uploader is emptied, so the same pictures are not sent twice.
    assert app.file_uploader(key=state.keyed("classify.files", "mdl_1", 1)).value in (None, [])


def test_an_earlier_version_can_answer(trained: FakeApi) -> None:
    trained.returns("classify", make_classification(make_answer("a.png", version=1)))
    app = classify_tab()

    app.selectbox(key=state.keyed("classify.version", "mdl_1")).set_value(1)
    choose_files(app, "a.png")
    app.button(key="classify.go").click().run()

    ((_, kwargs),) = trained.called("classify")
    assert kwargs["version"] == 1
    assert "Answered by version 1." in texts(app)


def test_a_refused_request_is_one_sentence(trained: FakeApi) -> None:
    trained.fails("classify", "Not ready", "Version 2 is still loading. Try again in a minute.", status=409)
    app = classify_tab()

    choose_files(app, "a.png")
    app.button(key="classify.go").click().run()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["Not ready"]
    assert "Version 2 is still loading. Try again in a minute." in [c.value for c in app.caption]


def test_right_and_wrong_send_feedback(trained: FakeApi) -> None:
    trained.returns("classify", make_classification(make_answer("a.png", "cat"), make_answer("b.png", "cat")))
    confirmed = make_task("tsk_a.png", feedback={"correct": True, "label": "cat"})
    corrected = make_task("tsk_b.png", feedback={"correct": False, "label": "dog"})
    answers = {"tsk_a.png": confirmed, "tsk_b.png": corrected}
    trained.answers_with("give_feedback", lambda token, task_id, **kw: answers[task_id])
    app = classify_tab()
    choose_files(app, "a.png", "b.png")
    app.button(key="classify.go").click().run()
    assert texts(app).count("Your check: not checked yet") == 2

    app.button(key="classify.0.right").click().run()
    app.selectbox(key="classify.1.label").set_value("dog")
    app.button(key="classify.1.correct").click().run()

    assert_no_exception(app)
    assert trained.called("give_feedback") == [
        ((TOKEN, "tsk_a.png"), {"correct": True, "label": None}),
        ((TOKEN, "tsk_b.png"), {"correct": None, "label": "dog"}),
    ]
    page = texts(app)
    assert "Your check: :green[:material/check: right]" in page
    assert "Your check: :red[:material/close: wrong], it is 'dog'" in page


def test_refused_feedback_says_why(trained: FakeApi) -> None:
    trained.returns("classify", make_classification(make_answer("a.png")))
    trained.fails("give_feedback", "Invalid input", "'cow' is not a class of this model.", status=422)
    app = classify_tab()
    choose_files(app, "a.png")
    app.button(key="classify.go").click().run()

    app.button(key="classify.0.right").click().run()

    assert_no_exception(app)
    assert "Invalid input" in [e.value for e in app.error]
    assert "'cow' is not a class of this model." in [c.value for c in app.caption]
