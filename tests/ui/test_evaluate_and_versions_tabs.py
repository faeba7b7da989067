"""The Evaluate tab (accuracy, per class, confusion matrix with its pictures, calibration, possible label mistakes)
and the Versions tab (the table, making an earlier version answer again, downloading an export)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import (
    METRICS,
    PNG,
    TOKEN,
    FakeApi,
    assert_no_exception,
    list_pet_images,
    make_classes,
    make_model,
    make_stats,
    make_version,
    signed_in_app,
    texts,
)
from ui import state

PAGE = "views/model.py"


@pytest.fixture
def trained(api: FakeApi) -> FakeApi:
    """A model whose version 2 answers; version 1 came before it."""
    api.returns("get_model", make_model(status="ready", active_version=2))
    api.returns("list_versions", [make_version(2), make_version(1, active=False, metrics={**METRICS, "accuracy": 0.5})])
    api.returns("thumbnail", PNG)
    api.returns("list_updates", [])
    return api


def open_tab(tab: str) -> AppTest:
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    app.session_state[state.MODEL_TAB] = tab
    app.run()
    assert_no_exception(app)
    return app


def charts(app: AppTest) -> list:
    return app.get("arrow_vega_lite_chart") + app.get("vega_lite_chart")


def thumbnail_ids(api: FakeApi) -> list[int]:
    return [args[2] for args, _ in api.called("thumbnail")]


def test_evaluate_shows_accuracy_per_class_confusion_calibration_and_label_mistakes(trained: FakeApi) -> None:
    app = open_tab("Evaluate")

    assert app.selectbox(key=state.keyed("evaluate.version", "mdl_1")).value == 2  # the answering version
    assert [(m.label, m.value) for m in app.metric] == [
        ("Right on the test pictures", "87.5%"),
        ("Test pictures", "8"),
        ("Confidence off by", "3.1 points"),
    ]
    per_class = app.dataframe[0].value.to_dict("records")
    assert [(r["class"], r["found"], r["right when it says so"], r["test pictures"]) for r in per_class] == [
        ("cat", 1.0, 0.8, 4),
        ("dog", 0.75, 1.0, 4),
    ]
    page = texts(app)
    assert "Weakest: 'dog'. More, and more varied, pictures of it usually help most." in page
    assert len(charts(app)) == 2, "the confusion matrix and the calibration chart"
    # The one mistake cell ('dog' taken for 'cat') is chosen, and its picture shown.
    assert app.selectbox(key=state.keyed("evaluate.cell", "mdl_1", 2)).value == ("dog", "cat")
    assert "71% sure it is 'cat'" in [image.proto.imgs[0].caption for image in app.image]
    assert "On average its confidence is 3.1% away from how often it is right" in page
    assert "Possible label mistakes" in [s.value for s in app.subheader]
    assert thumbnail_ids(trained) == [104, 3, 5]
    assert app.button(key="evaluate.review").label == "Review them one by one"


def test_without_calibration_or_label_mistakes_the_rest_still_shows(trained: FakeApi) -> None:
    older = {k: v for k, v in METRICS.items() if k not in ("calibration", "label_mistakes")}
    trained.returns("list_versions", [make_version(2, metrics=older)])
    app = open_tab("Evaluate")

    assert [m.label for m in app.metric] == ["Right on the test pictures", "Test pictures"]
    assert len(charts(app)) == 1  # the confusion matrix only
    assert "Possible label mistakes" not in [s.value for s in app.subheader]


def test_a_perfect_version_has_no_mistakes_to_open(trained: FakeApi) -> None:
    perfect = {**METRICS, "accuracy": 1.0, "confusion_matrix": [[4, 0], [0, 4]], "misclassified": []}
    perfect["label_mistakes"] = []
    trained.returns("list_versions", [make_version(2, metrics=perfect)])
    app = open_tab("Evaluate")

    assert "It got every test picture right." in [s.value for s in app.success]
    assert "No picture looks filed under the wrong class." in texts(app)
    assert trained.called("thumbnail") == []


def test_an_earlier_version_can_be_evaluated(trained: FakeApi) -> None:
    app = open_tab("Evaluate")

    app.selectbox(key=state.keyed("evaluate.version", "mdl_1")).set_value(1).run()

    assert app.metric[0].value == "50.0%"
    assert not any(b.key == "evaluate.review" for b in app.button)  # review follows the answering version


def test_nothing_to_evaluate_before_the_first_training(api: FakeApi) -> None:
    api.returns("get_model", make_model())
    api.returns("list_versions", [])
    app = open_tab("Evaluate")

    assert any("Nothing to evaluate yet" in i.value for i in app.info)


def test_review_them_one_by_one_opens_the_review_on_the_data_tab(trained: FakeApi) -> None:
    trained.returns("get_version", make_version(2))
    trained.returns("dataset_stats", make_stats({"cat": 6, "dog": 6}))
    trained.returns("list_imports", [])
    trained.returns("list_classes", make_classes(cat=6, dog=6))
    trained.answers_with("list_images", list_pet_images)
    app = open_tab("Evaluate")

    app.button(key="evaluate.review").click().run()

    assert_no_exception(app)
    assert app.session_state[state.MODEL_TAB] == "Data"
    assert [bar.proto.text for bar in app.get("progress")] == ["Possible mistake 1 of 2"]


def test_versions_table_and_making_an_earlier_version_answer_again(trained: FakeApi) -> None:
    trained.returns("activate_version", make_version(1))
    app = open_tab("Versions")

    page = texts(app)
    assert ":material/check_circle: now" in page and "87.5%" in page and "50.0%" in page and "2: cat, dog" in page
    assert not any(b.key == "versions.activate.2" for b in app.button)  # already answering
    app.button(key="versions.activate.1").click().run()

    assert_no_exception(app)
    assert trained.called("activate_version") == [((TOKEN, "mdl_1", 1), {})]
    assert "Version 1 answers from now on." in [s.value for s in app.success]


def test_download_an_export(trained: FakeApi) -> None:
    trained.returns("export_version", b"TFL3 model bytes")
    app = open_tab("Versions")
    assert app.get("download_button") == []  # made on request only

    app.selectbox(key="versions.format").set_value("tflite")
    app.button(key="versions.export").click().run()

    assert_no_exception(app)
    assert trained.called("export_version") == [((TOKEN, "mdl_1", 2, "tflite"), {})]
    (download,) = app.get("download_button")
    assert download.proto.label == "Download version 2 (.tflite)"
    assert app.session_state[state.keyed(state.EXPORT_FILE, "mdl_1")] == (2, "tflite", b"TFL3 model bytes")


def test_an_export_the_api_cannot_make_says_why(trained: FakeApi) -> None:
    trained.fails("export_version", "Not found", "This version cannot be exported yet.", status=404)
    app = open_tab("Versions")

    app.button(key="versions.export").click().run()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["Not found"]
    assert "This version cannot be exported yet." in [c.value for c in app.caption]
    assert app.get("download_button") == []
    assert app.button(key="versions.activate.1")  # the rest of the tab is still there


def test_no_versions_yet(api: FakeApi) -> None:
    api.returns("get_model", make_model())
    api.returns("list_versions", [])
    app = open_tab("Versions")

    assert any(i.value.startswith("No versions yet.") for i in app.info)
