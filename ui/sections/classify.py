"""The Classify tab: pictures from files or the camera; for each, the most likely classes with how sure the model
is, "not sure" in plain words, the version that answered, and Right / Wrong to tell it."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import FileAnswer, Model, Version
from ui.components import show_problem
from ui.sections.classes import PICTURE_TYPES
from ui.sections.feedback import feedback_words, given_feedback, render_feedback, show_feedback_error
from ui.sections.versions import choose_version

MAX_PICTURES = 100  # the API's limit per request
CAMERA_NAME = "camera.jpg"


@dataclass(frozen=True)
class Shown:
    """A classified picture as the tab shows it: the bytes sent and the API's answer for them."""

    picture: bytes
    answer: FileAnswer


def render_classify(token: str, model: Model) -> None:
    if model.active_version is None:
        st.info(
            "Nothing can answer yet. Train the model on the **Train** tab; then drop pictures here to see what "
            "it thinks they show."
        )
        return
    try:
        versions = api.list_versions(token, model.id)
    except ApiError as err:
        show_problem(err)
    show_feedback_error()
    files = choose_pictures(model.id)
    with st.expander("Options", icon=":material/tune:"):
        version_column, top_column = st.columns(2)
        with version_column:
            version = choose_version(versions, key=state.keyed("classify.version", model.id), label="Version")
        most = max(2, min(10, len(version.classes)))
        top_k = top_column.slider("Classes to show per picture", 1, most, min(3, most), key="classify.top_k")
    if st.button("Classify", type="primary", icon=":material/image_search:", disabled=not files, key="classify.go"):
        classify(token, model.id, files, top_k, None if version.active else version.version)
    render_results(token, model.id, versions)


def choose_pictures(model_id: str) -> list[tuple[str, bytes]]:
    """The pictures to classify: uploaded files and, when the camera is on, its photo."""
    # A new key after each classification empties the uploader and the camera, so nothing is sent twice.
    round_ = st.session_state.get(state.keyed(state.CLASSIFY_ROUND, model_id), 0)
    uploads = st.file_uploader(
        "Pictures",
        type=PICTURE_TYPES,
        accept_multiple_files=True,
        key=state.keyed("classify.files", model_id, round_),
        help=f"Up to {MAX_PICTURES} at once.",
    )
    files = [(upload.name, upload.getvalue()) for upload in uploads or []]
    if st.toggle("Use the camera", key="classify.camera_on"):
        photo = st.camera_input("Take a picture", key=state.keyed("classify.camera", model_id, round_))
        if photo is not None:
            files.append((CAMERA_NAME, photo.getvalue()))
    return files


def classify(token: str, model_id: str, files: list[tuple[str, bytes]], top_k: int, version: int | None) -> None:
    if len(files) > MAX_PICTURES:
        st.error(f"Classify at most {MAX_PICTURES} pictures at once.")
        return
    try:
        with st.spinner(f"Looking at {len(files)} picture{'s' if len(files) != 1 else ''} …"):
            result = api.classify(token, model_id, files, top_k=top_k, version=version)
    except ApiError as err:
        show_problem(err, stop=False)
        return
    shown = [Shown(data, answer) for (_, data), answer in zip(files, result.results, strict=False)]
    st.session_state[state.keyed(state.CLASSIFIED, model_id)] = shown
    round_key = state.keyed(state.CLASSIFY_ROUND, model_id)
    st.session_state[round_key] = st.session_state.get(round_key, 0) + 1
    st.rerun()


def render_results(token: str, model_id: str, versions: list[Version]) -> None:
    shown: list[Shown] = st.session_state.get(state.keyed(state.CLASSIFIED, model_id), [])
    if not shown:
        return
    classes = {v.version: v.classes for v in versions}
    st.subheader("What the model sees", anchor=False)
    for number, item in enumerate(shown):
        with st.container(border=True):
            picture_column, answer_column = st.columns([1, 2])
            picture_column.image(item.picture, caption=item.answer.name, width="stretch")
            with answer_column:
                render_answer(token, item.answer, classes.get(item.answer.version or 0, []), key=f"classify.{number}")


def render_answer(token: str, answer: FileAnswer, classes: list[str], *, key: str) -> None:
    """The answer in words, the top classes as bars, the version, and Right / Wrong."""
    if answer.error is not None or answer.label is None:
        # The per-file problem's title is generic ("Invalid input"); its detail says what to do.
        st.error("This picture could not be classified.")
        if answer.error:
            st.caption(answer.error.detail)
        return
    st.markdown(answer_words(answer))
    for score in answer.top:
        st.progress(min(1.0, max(0.0, score.probability)), text=f"{score.label} · {score.probability:.0%}")
    st.caption(f"Answered by version {answer.version}.")
    if answer.task_id:
        feedback = given_feedback(answer.task_id, None)
        st.caption(f"Your check: {feedback_words(feedback)}")
        render_feedback(token, answer.task_id, answer.label, classes or [s.label for s in answer.top], key=key)


def answer_words(answer: FileAnswer) -> str:
    """'**It is 'cat'** (92% sure)', or, when unsure, that it may be none of the classes."""
    sure = f"{answer.confidence:.0%}" if answer.confidence is not None else "?"
    if answer.uncertain:
        return (
            f":orange[:material/help: **Not sure.**] It looks most like '{answer.label}' ({sure} sure), but it may "
            "be none of the classes this model knows."
        )
    return f"**It is '{answer.label}'** ({sure} sure)."
