"""The models page: the list with status and counts, creating a model (with a sample picture), errors."""

from __future__ import annotations

from tests.ui.conftest import (
    PNG,
    TOKEN,
    FakeApi,
    assert_no_exception,
    make_classes,
    make_images,
    make_model,
    make_stats,
    signed_in_app,
    texts,
)

PAGE = "views/models.py"


def test_lists_models_with_status_and_counts(api: FakeApi) -> None:
    api.returns(
        "list_models",
        [
            make_model("mdl_1", "Flowers", num_classes=5, num_images=600),
            make_model("mdl_2", "Cats", status="needs_data", num_classes=0, num_images=0, target_accuracy=None),
        ],
    )
    app = signed_in_app(PAGE)
    app.run()

    assert_no_exception(app)
    page = texts(app)
    assert "Flowers" in page and "5 classes · 600 pictures" in page
    assert "Cats" in page and "0 classes · 0 pictures" in page
    assert "Goal: as good as possible, training at most 10 minutes." in page
    assert "Ready to train" in page and "Needs pictures" in page


def test_a_sample_picture_is_shown_for_models_that_have_one(api: FakeApi) -> None:
    api.returns("list_models", [make_model(has_sample_image=True)])
    api.returns("sample_image", PNG)
    app = signed_in_app(PAGE)
    app.run()

    assert_no_exception(app)
    assert api.called("sample_image") == [((TOKEN, "mdl_1"), {})]
    assert len(app.image) == 1


def test_no_models_yet_invites_to_create_one(api: FakeApi) -> None:
    api.returns("list_models", [])
    app = signed_in_app(PAGE)
    app.run()

    assert "You have no models yet." in texts(app)
    assert "Create model" in [b.label for b in app.button]


def create_form(app):
    return next(b for b in app.button if b.label == "Create model")


def open_model_page_answers(api: FakeApi) -> None:
    api.returns("get_model", make_model("mdl_9", "Birds", status="needs_data", num_classes=0, num_images=0))
    api.returns("dataset_stats", make_stats({}))
    api.returns("list_imports", [])
    api.returns("list_classes", make_classes())
    api.returns("list_images", make_images("x", 0))


def test_create_a_model_and_land_on_its_page(api: FakeApi) -> None:
    api.returns("list_models", [])
    api.returns("create_model", make_model("mdl_9", "Birds"))
    api.returns("set_sample_image", make_model("mdl_9", "Birds", has_sample_image=True))
    open_model_page_answers(api)
    app = signed_in_app(PAGE)
    app.run()

    app.text_input[0].input("  Birds ")
    app.text_area[0].input("Garden birds")
    app.file_uploader[0].set_value(("robin.png", PNG, "image/png"))
    app.select_slider[0].set_value("95 %")
    app.select_slider[1].set_value("1 hour")
    create_form(app).click().run()

    assert_no_exception(app)
    assert api.called("create_model") == [((TOKEN, "Birds", "Garden birds", 0.95, 3600), {})]
    assert api.called("set_sample_image") == [((TOKEN, "mdl_9", "robin.png", PNG), {})]
    assert app.title[0].value == "Birds"
    assert app.query_params["model"] == "mdl_9"


def test_advanced_options_give_exact_values(api: FakeApi) -> None:
    api.returns("list_models", [])
    api.returns("create_model", make_model("mdl_9", "Birds"))
    open_model_page_answers(api)
    app = signed_in_app(PAGE)
    app.run()

    app.text_input[0].input("Birds")
    app.checkbox[0].check()
    app.number_input[0].set_value(97.5)
    app.number_input[1].set_value(45)
    create_form(app).click().run()

    assert api.called("create_model") == [((TOKEN, "Birds", "", 0.975, 2700), {})]


def test_a_model_needs_a_name(api: FakeApi) -> None:
    api.returns("list_models", [])
    app = signed_in_app(PAGE)
    app.run()

    create_form(app).click().run()

    assert "Give the model a name." in [e.value for e in app.error]
    assert api.called("create_model") == []


def test_a_refusal_is_one_sentence_and_what_to_do(api: FakeApi) -> None:
    api.returns("list_models", [])
    api.fails("create_model", "Invalid input", "Choose a shorter name.", status=422)
    app = signed_in_app(PAGE)
    app.run()

    app.text_input[0].input("Birds")
    create_form(app).click().run()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["Invalid input"]
    assert "Choose a shorter name." in [c.value for c in app.caption]
    assert "Traceback" not in texts(app)


def test_api_down_on_the_list(api: FakeApi) -> None:
    api.fails("list_models", "The Classifly API does not answer", "Start the platform with 'make run'.")
    app = signed_in_app(PAGE)
    app.run()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["The Classifly API does not answer"]


def test_open_goes_to_the_model_page(api: FakeApi) -> None:
    api.returns("list_models", [make_model("mdl_9", "Birds")])
    open_model_page_answers(api)
    app = signed_in_app(PAGE)
    app.run()

    app.button(key="models.open.mdl_9").click().run()

    assert_no_exception(app)
    assert app.title[0].value == "Birds"
    assert api.called("get_model") == [((TOKEN, "mdl_9"), {})]
