"""A model's page: the Data tab (overview, import with progress and report, gallery, review, classes, rejects),
the API examples and the settings. Train, Evaluate, Versions, Classify, History and model updates have their own
files."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import (
    PNG,
    TOKEN,
    FakeApi,
    assert_no_exception,
    list_pet_images,
    make_classes,
    make_job,
    make_model,
    make_stats,
    make_version,
    signed_in_app,
    texts,
)
from ui import state
from ui.api_types import UploadResult

PAGE = "views/model.py"
REPORT = {
    "summary": "Added 12 pictures in 2 classes, rejected 1 files (see the reasons).",
    "classes": [{"name": "cat", "train": 5, "test": 1, "total": 6}, {"name": "dog", "train": 5, "test": 1, "total": 6}],
    "rejected": 1,
    "rejects": [{"name": "pets/dog/notes.jpg", "reason": "This is not a picture."}],
    "duplicates": 1,
    "warnings": ["Few pictures: 'cat' has 6. Add at least 10 per class."],
    "ignored_files": 2,
}


@pytest.fixture
def pets(api: FakeApi) -> FakeApi:
    """A model with 6 cats and 6 dogs, a finished import with its report, one refused file."""
    api.returns("get_model", make_model())
    api.returns("dataset_stats", make_stats({"cat": 6, "dog": 6}, ["Few pictures: add at least 10 per class."], 1))
    api.returns("list_imports", [make_job(result=REPORT)])
    api.returns("list_classes", make_classes(cat=6, dog=6))
    api.answers_with("list_images", list_pet_images)
    api.returns("thumbnail", PNG)
    return api


def progress_texts(app: AppTest) -> list[str]:
    return [bar.proto.text for bar in app.get("progress")]


def model_app(tab: str | None = None) -> AppTest:
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    if tab:
        app.session_state[state.MODEL_TAB] = tab
    app.run()
    assert_no_exception(app)
    return app


def test_data_tab_shows_counts_warnings_chart_report_gallery_and_rejects(pets: FakeApi) -> None:
    app = model_app()

    page = texts(app)
    assert app.title[0].value == "Flowers"
    assert [m.label for m in app.metric] == ["Pictures", "Classes", "For training", "For testing", "Rejected files"]
    assert app.metric[0].value == "12"
    assert "Few pictures: add at least 10 per class." in [w.value for w in app.warning]
    assert app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart"), "the class chart"
    assert "224×224 pixels, in colour" in page
    assert any("Last import" in e.label and REPORT["summary"] in e.label for e in app.expander)
    assert len(app.image) == 6  # the cats' thumbnails
    assert {args[2] for args, _ in pets.called("thumbnail")} == set(range(1, 7))
    assert any(e.label.startswith("Refused files (1)") for e in app.expander)


def test_import_a_zip_follows_the_job_and_reports(pets: FakeApi) -> None:
    pets.returns("start_import", make_job("queued", 0, 0))
    pets.returns("get_job", make_job("running", 5, 12, message="Reading pictures"))
    app = model_app()

    zip_file = ("pets.zip", b"PK\x05\x06" + bytes(18), "application/zip")
    app.file_uploader(key=state.keyed("import.file", "mdl_1", 0)).set_value(zip_file).run()
    app.button(key="import.start").click().run()

    assert_no_exception(app)
    ((args, _),) = pets.called("start_import")
    assert args[:3] == (TOKEN, "mdl_1", "pets.zip")
    assert app.session_state[state.keyed(state.IMPORT_JOB, "mdl_1")] == "job_1"
    assert progress_texts(app) == ["Importing … 5 of 12 files. Reading pictures"]

    pets.returns("get_job", make_job("succeeded", 12, 12, result=REPORT))
    app.run()

    assert_no_exception(app)
    assert state.keyed(state.IMPORT_JOB, "mdl_1") not in app.session_state
    assert REPORT["summary"] in [s.value for s in app.success]


def test_a_failed_import_says_why_and_that_nothing_changed(pets: FakeApi) -> None:
    failed = make_job("failed", 0, 0, error={"title": "Not a zip", "detail": "Send a .zip file."})
    pets.returns("list_imports", [failed])
    app = model_app()

    assert any("failed: Not a zip" in e.value for e in app.error)
    assert any("Your pictures are as they were before it." in c.value for c in app.caption)


def tick(app: AppTest, *image_ids: int) -> None:
    for image_id in image_ids:
        app.checkbox(key=f"gallery.pick.{image_id}").check()
    app.run()


def test_move_ticked_pictures_to_another_class(pets: FakeApi) -> None:
    pets.returns("move_image", None)
    app = model_app()

    tick(app, 2, 3)
    app.selectbox(key="gallery.move_to").set_value("dog")
    app.button(key="gallery.move").click().run()

    assert_no_exception(app)
    assert pets.called("move_image") == [((TOKEN, "mdl_1", 2, "dog"), {}), ((TOKEN, "mdl_1", 3, "dog"), {})]
    assert "Moved 2 pictures to 'dog'." in [s.value for s in app.success]


def test_delete_ticked_pictures(pets: FakeApi) -> None:
    pets.returns("delete_images", None)
    app = model_app()

    tick(app, 4)
    app.button(key="gallery.delete").click().run()

    assert pets.called("delete_images") == [((TOKEN, "mdl_1", [4]), {})]
    assert "Deleted 1 pictures." in [s.value for s in app.success]


def test_another_class_shows_its_own_pictures(pets: FakeApi) -> None:
    app = model_app()

    app.selectbox(key=state.keyed("gallery.class", "mdl_1")).set_value("dog").run()

    assert {args[2] for args, _ in pets.called("thumbnail")} >= set(range(100, 106))


def test_review_keep_discard_move_and_back(pets: FakeApi) -> None:
    pets.returns("delete_images", None)
    pets.returns("move_image", None)
    app = model_app()
    app.toggle(key=state.keyed("review.on", "mdl_1")).set_value(True).run()
    position = state.keyed(state.REVIEW_POSITION, "mdl_1", "cat")

    assert progress_texts(app) == ["Picture 1 of 6 in 'cat'"]
    assert {b.key: b.proto.shortcut for b in app.button if b.key and b.key.startswith("review.")} == {
        "review.keep": "k",
        "review.discard": "d",
        "review.move": "m",
        "review.back": "b",
    }
    app.button(key="review.keep").click().run()
    assert app.session_state[position] == 1
    app.button(key="review.discard").click().run()
    assert pets.called("delete_images") == [((TOKEN, "mdl_1", [2]), {})]
    assert app.session_state[position] == 1  # the next picture slid into this place
    app.button(key="review.move").click().run()
    assert pets.called("move_image") == [((TOKEN, "mdl_1", 2, "dog"), {})]
    app.button(key="review.back").click().run()
    assert app.session_state[position] == 0
    assert_no_exception(app)


def test_review_starts_with_the_possible_label_mistakes_of_the_answering_version(pets: FakeApi) -> None:
    pets.returns("get_model", make_model(status="ready", active_version=2))
    pets.returns("get_version", make_version(2))
    pets.returns("move_image", None)
    pets.returns("delete_images", None)
    app = model_app()
    app.toggle(key=state.keyed("review.on", "mdl_1")).set_value(True).run()
    position = state.keyed(state.REVIEW_POSITION, "mdl_1", "mistakes", 2)

    assert pets.called("get_version") == [((TOKEN, "mdl_1", 2), {})]
    assert app.radio(key=state.keyed(state.REVIEW_SOURCE, "mdl_1")).value == "mistakes"
    assert progress_texts(app) == ["Possible mistake 1 of 2"]
    assert "Filed under **cat**; the model is 96% sure it is **dog**." in texts(app)
    assert app.button(key="review.move").label == "Move to 'dog'"  # the suggested class, preselected
    app.button(key="review.move").click().run()
    assert pets.called("move_image") == [((TOKEN, "mdl_1", 3, "dog"), {})]
    assert app.session_state[position] == 1  # the list stays as it was: on to the next entry
    app.button(key="review.discard").click().run()
    assert pets.called("delete_images") == [((TOKEN, "mdl_1", [5]), {})]
    assert "You have looked at all 2 possible label mistakes." in [s.value for s in app.success]

    app.radio(key=state.keyed(state.REVIEW_SOURCE, "mdl_1")).set_value("class").run()
    assert progress_texts(app) == ["Picture 1 of 6 in 'cat'"]
    assert_no_exception(app)


def test_a_label_mistake_deleted_since_can_only_be_skipped(pets: FakeApi) -> None:
    pets.returns("get_model", make_model(status="ready", active_version=2))
    pets.returns("get_version", make_version(2))
    pets.fails("thumbnail", "Not found", "There is no picture 3.", status=404)
    app = model_app()
    app.toggle(key=state.keyed("review.on", "mdl_1")).set_value(True).run()

    assert "This picture has been deleted since." in [i.value for i in app.info]
    assert app.button(key="review.keep").label == "Next"
    assert app.button(key="review.discard").disabled and app.button(key="review.move").disabled


def test_review_says_when_a_class_is_done(pets: FakeApi) -> None:
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    app.session_state[state.keyed("review.on", "mdl_1")] = True
    app.session_state[state.keyed(state.REVIEW_POSITION, "mdl_1", "cat")] = 6
    app.run()

    assert "You have looked at all 6 pictures of 'cat'." in [s.value for s in app.success]


def test_add_pictures_to_a_new_class(pets: FakeApi) -> None:
    pets.returns("upload_images", UploadResult(accepted=2, duplicates=0, rejected=0, results=[]))
    app = model_app()

    app.text_input(key="add.new_name").input("hamster")
    app.file_uploader(key="add.files").set_value([("a.png", PNG, "image/png"), ("b.png", PNG, "image/png")])
    next(b for b in app.button if b.label == "Add pictures").click().run()

    assert_no_exception(app)
    assert pets.called("upload_images") == [((TOKEN, "mdl_1", "hamster", [("a.png", PNG), ("b.png", PNG)]), {})]
    assert "Added 2 pictures to 'hamster'." in [s.value for s in app.success]


def test_add_an_empty_class_rename_and_delete_a_class(pets: FakeApi) -> None:
    pets.returns("create_class", None)
    pets.returns("rename_class", None)
    pets.returns("delete_class", None)
    app = model_app()

    app.text_input(key="add.empty_class").input("owl")
    next(b for b in app.button if b.label == "Add class").click().run()
    assert pets.called("create_class") == [((TOKEN, "mdl_1", "owl"), {})]

    app.selectbox(key="classes.chosen").set_value("dog")
    app.text_input(key="classes.new_name").input("puppy").run()
    app.button(key="classes.rename").click().run()
    assert pets.called("rename_class") == [((TOKEN, "mdl_1", "dog", "puppy"), {})]

    assert app.button(key="classes.delete").disabled
    app.selectbox(key="classes.chosen").set_value("cat")
    app.checkbox(key="classes.sure").check().run()
    app.button(key="classes.delete").click().run()
    assert pets.called("delete_class") == [((TOKEN, "mdl_1", "cat"), {})]


def test_only_the_open_tab_does_its_work(pets: FakeApi) -> None:
    app = model_app("Classify")  # the model is not trained yet

    assert any(i.value.startswith("Nothing can answer yet.") for i in app.info)
    assert [name for name, _, _ in pets.calls] == ["get_model"]
    assert len(app.metric) == 0


def test_api_tab_has_this_models_id_and_the_server_url(pets: FakeApi) -> None:
    app = model_app("API")

    code = "\n".join(block.value for block in app.code)
    assert "API=http://api.example:8000" in code and "MODEL=mdl_1" in code
    assert 'API = "http://api.example:8000"' in code and 'MODEL = "mdl_1"' in code
    assert "-F label=cat" in code


def test_settings_save_and_delete(pets: FakeApi) -> None:
    pets.returns("update_model", make_model(name="Pets"))
    pets.returns("delete_model", None)
    pets.returns("list_models", [])
    app = model_app("Settings")

    app.text_input[0].input("Pets")
    app.checkbox[0].check()  # as good as possible
    app.toggle[0].set_value(True)  # train again by itself when a quick update is not good enough
    next(b for b in app.button if b.label == "Save").click().run()
    ((args, kwargs),) = pets.called("update_model")
    assert args == (TOKEN, "mdl_1") and kwargs["name"] == "Pets" and kwargs["target_accuracy"] is None
    assert kwargs["auto_retrain"] is True

    app.checkbox(key="settings.sure").check().run()
    app.button(key="settings.delete").click().run()
    assert pets.called("delete_model") == [((TOKEN, "mdl_1"), {})]
    assert app.title[0].value == "Models"


def test_a_missing_model_is_explained(api: FakeApi) -> None:
    api.fails("get_model", "Not found", "There is no model 'mdl_x'.", status=404)
    app = signed_in_app(PAGE, query={"model": "mdl_x"})
    app.run()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["Not found"]
    assert "There is no model 'mdl_x'." in [c.value for c in app.caption]


def test_no_model_chosen_points_back_to_the_list(api: FakeApi) -> None:
    app = signed_in_app(PAGE)
    app.run()

    assert "Choose a model first." in [i.value for i in app.info]
    assert api.calls == []
