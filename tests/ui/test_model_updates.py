"""Quick model updates: after pictures are added or a class deleted on a trained model, the page follows the
update live, then says what it did (and when a full training is recommended, with a way to the Train tab);
the Versions tab lists the updates and has "Update the model now"."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import (
    PNG,
    TOKEN,
    UPDATE_RESULT,
    FakeApi,
    assert_no_exception,
    list_pet_images,
    make_classes,
    make_job,
    make_model,
    make_stats,
    make_update,
    make_version,
    signed_in_app,
    texts,
)
from ui import state
from ui.api_types import UploadResult

PAGE = "views/model.py"
DONE = "Version 3 answers now (added checker): 92.0% of the test pictures right, ready in 2.1 s."


@pytest.fixture
def trained(api: FakeApi) -> FakeApi:
    """A trained model (version 2 answers) with 6 cats and 6 dogs."""
    api.returns("get_model", make_model(status="ready", active_version=2))
    api.returns("dataset_stats", make_stats({"cat": 6, "dog": 6}))
    api.returns("list_imports", [])
    api.returns("list_classes", make_classes(cat=6, dog=6))
    api.answers_with("list_images", list_pet_images)
    api.returns("thumbnail", PNG)
    api.returns("list_versions", [make_version(2)])
    return api


def model_app(tab: str = "Data") -> AppTest:
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    app.session_state[state.MODEL_TAB] = tab
    app.run()
    assert_no_exception(app)
    return app


def progress_texts(app: AppTest) -> list[str]:
    return [bar.proto.text for bar in app.get("progress")]


def upload_checker(app: AppTest) -> None:
    app.text_input(key="add.new_name").input("checker")
    app.file_uploader(key="add.files").set_value([("a.png", PNG, "image/png")])
    next(b for b in app.button if b.label == "Add pictures").click().run()
    assert_no_exception(app)


def test_an_upload_is_followed_live_then_its_outcome_shown_until_hidden(trained: FakeApi) -> None:
    trained.returns("upload_images", UploadResult(accepted=1, duplicates=0, rejected=0, results=[], update_job_id="u1"))
    progress = {"done": 3, "total": 12, "fraction": 0.25}
    trained.returns("get_job", make_update("running", progress=progress, message="Features of 3 of 12 pictures ready"))
    app = model_app()

    upload_checker(app)

    assert trained.called("get_job") == [((TOKEN, "u1"), {})]
    assert progress_texts(app) == ["Updating the model … Features of 3 of 12 pictures ready"]
    assert "Added 1 pictures to 'checker'." in [s.value for s in app.success]

    trained.returns("get_job", make_update("succeeded", result=UPDATE_RESULT))
    app.run()  # the next poll finds it done and refreshes the page

    assert_no_exception(app)
    assert progress_texts(app) == []
    assert DONE in [s.value for s in app.success]
    assert not any(b.key == "update.train" for b in app.button)  # good enough: no training advised

    app.button(key="update.hide").click().run()
    assert DONE not in texts(app)
    assert len(trained.called("get_job")) == 2  # nothing more is polled


def test_a_deleted_class_whose_update_advises_a_full_training_leads_to_the_train_tab(trained: FakeApi) -> None:
    trained.returns("delete_class", "u2")
    trained.returns("get_job", make_update("queued", job_id="u2"))
    trained.returns("list_runs", [])
    app = model_app()

    app.selectbox(key="classes.chosen").set_value("cat")
    app.checkbox(key="classes.sure").check().run()
    app.button(key="classes.delete").click().run()

    assert_no_exception(app)
    assert [args for args, _ in trained.called("get_job")] == [(TOKEN, "u2")]
    assert progress_texts(app) == [
        "Updating the model … waiting a moment, so that changes made together make one new version."
    ]

    weak = {**UPDATE_RESULT, "added": [], "removed": ["cat"], "accuracy": 0.61, "retrain_recommended": True}
    trained.returns("get_job", make_update("succeeded", result=weak, job_id="u2"))
    app.run()

    assert "Version 3 answers now (removed cat): 61.0% of the test pictures right, ready in 2.1 s." in texts(app)
    assert any(w.value.startswith("**A full training is recommended.**") for w in app.warning)
    app.button(key="update.train").click().run()

    assert_no_exception(app)
    assert app.session_state[state.MODEL_TAB] == "Train"
    assert app.button(key="train.start").label == "Train"
    assert "A full training is recommended" not in texts(app)  # the advice was followed


def test_a_failed_update_says_why_and_that_the_old_version_still_answers(trained: FakeApi) -> None:
    trained.returns("upload_images", UploadResult(accepted=1, duplicates=0, rejected=0, results=[], update_job_id="u1"))
    error = {"code": "conflict", "title": "Conflict", "detail": "Version 2 is one whole network; train again."}
    trained.returns("get_job", make_update("failed", error=error, message=error["detail"]))
    app = model_app()

    upload_checker(app)
    app.run()

    assert "The model could not be updated." in [e.value for e in app.error]
    assert "Version 2 is one whole network; train again. The version that answered before still answers." in [
        c.value for c in app.caption
    ]


def test_an_untrained_model_has_no_update_to_follow(trained: FakeApi) -> None:
    trained.returns("get_model", make_model())
    trained.returns("upload_images", UploadResult(accepted=1, duplicates=0, rejected=0, results=[]))
    app = model_app()

    upload_checker(app)

    assert trained.called("get_job") == []
    assert progress_texts(app) == []


def test_the_versions_tab_lists_updates_and_updates_the_model_now(trained: FakeApi) -> None:
    failed = make_update("failed", job_id="u0", error={"detail": "Add pictures to 'cat', then try again."})
    trained.returns("list_updates", [make_update("succeeded", result=UPDATE_RESULT), failed])
    trained.returns("update_model_now", make_update("queued", job_id="u9"))
    trained.returns("get_job", make_update("running", job_id="u9", message="Fitting the new head"))
    app = model_app("Versions")

    rows = app.dataframe[0].value.to_dict("records")
    assert [(r["outcome"], r["what happened"]) for r in rows] == [
        ("done", DONE),
        ("failed", "Add pictures to 'cat', then try again."),
    ]
    app.button(key="versions.update").click().run()

    assert_no_exception(app)
    assert trained.called("update_model_now") == [((TOKEN, "mdl_1"), {})]
    assert progress_texts(app) == ["Updating the model … Fitting the new head"]
    assert app.button(key="versions.update").disabled  # one update at a time


def test_update_now_refused_says_why(trained: FakeApi) -> None:
    trained.returns("list_updates", [])
    trained.fails("update_model_now", "Not ready", "This model has no trained version yet: train it once.", 409)
    app = model_app("Versions")

    app.button(key="versions.update").click().run()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["Not ready"]
    assert "No quick updates yet." in texts(app)  # the rest of the tab is still there


def test_moved_pictures_point_to_update_the_model_now(trained: FakeApi) -> None:
    trained.returns("move_image", None)
    app = model_app()

    app.checkbox(key="gallery.pick.1").check().run()
    app.button(key="gallery.move").click().run()

    assert_no_exception(app)
    assert (
        "Moved 1 pictures to 'dog'. The answering version learns of it with **Update the model now** on the "
        "Versions tab." in [s.value for s in app.success]
    )


def test_the_camera_is_off_until_asked_for(trained: FakeApi) -> None:
    app = model_app("Classify")
    assert app.get("camera_input") == []

    app.toggle(key="classify.camera_on").set_value(True).run()

    assert_no_exception(app)
    assert len(app.get("camera_input")) == 1


def test_an_import_into_a_trained_model_follows_the_update_it_started(trained: FakeApi) -> None:
    summary = "Added 3 pictures in 1 classes. The model is being updated with them (no training needed)."
    jobs = {
        "job_1": make_job("succeeded", 3, 3, result={"summary": summary, "model_update": "/v1/jobs/u3"}),
        "u3": make_update("running", job_id="u3", message="Fitting the new head"),
    }
    trained.answers_with("get_job", lambda token, job_id: jobs[job_id])
    app = signed_in_app(PAGE, query={"model": "mdl_1"})
    app.session_state[state.keyed(state.IMPORT_JOB, "mdl_1")] = "job_1"  # an import being followed
    app.run()

    assert_no_exception(app)
    assert [args[1] for args, _ in trained.called("get_job")] == ["job_1", "u3"]
    assert summary in [s.value for s in app.success]
    assert progress_texts(app) == ["Updating the model … Fitting the new head"]
