"""Review mode: one picture at a time, keep / discard / move to another class, with keyboard shortcuts. When the
answering version found possible label mistakes, review starts with those."""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import ClassInfo, LabelMistake, Model
from ui.components import show_problem
from ui.sections.gallery import choose_class

PREVIEW_SIZE = 512
MISTAKES, ONE_CLASS = "mistakes", "class"


def render_review(token: str, model: Model, classes: list[ClassInfo]) -> None:
    st.caption(
        "Look at each picture once: **K** keeps it, **D** discards it, **M** moves it to the class chosen on the "
        "right, **B** goes back."
    )
    mistakes, version = label_mistakes(token, model)
    source = ONE_CLASS
    if mistakes:
        source = st.radio(
            "Review",
            [MISTAKES, ONE_CLASS],
            key=state.keyed(state.REVIEW_SOURCE, model.id),
            horizontal=True,
            format_func=lambda s: f"Possible label mistakes ({len(mistakes)})" if s == MISTAKES else "One class",
        )
    _show_refusal()
    if source == MISTAKES:
        _review_mistakes(token, model, classes, mistakes, version)
    else:
        _review_class(token, model, classes)


def label_mistakes(token: str, model: Model) -> tuple[list[LabelMistake], int | None]:
    """The answering version's possible label mistakes, and its number; none without a version."""
    if model.active_version is None:
        return [], None
    try:
        version = api.get_version(token, model.id, model.active_version)
    except ApiError:
        return [], None  # reviewing one class still works; the next call shows a lasting problem
    return version.metrics.label_mistakes or [], version.version


def open_mistakes_review(model_id: str) -> None:
    """A callback (it sets widget states before they are drawn): the Data tab, reviewing the label mistakes."""
    st.session_state[state.MODEL_TAB] = "Data"
    st.session_state[state.keyed("review.on", model_id)] = True
    st.session_state[state.keyed(state.REVIEW_SOURCE, model_id)] = MISTAKES


def _show_refusal() -> None:
    problem = st.session_state.pop(state.REVIEW_ERROR, None)
    if problem is not None:
        st.error(problem.title)
        st.caption(problem.detail)


def _review_class(token: str, model: Model, classes: list[ClassInfo]) -> None:
    label = choose_class(classes, key=state.keyed("review.class", model.id), label="Review the class")
    if label is None:
        st.info("No pictures to review yet.")
        return
    position_key = state.keyed(state.REVIEW_POSITION, model.id, label)
    position = st.session_state.get(position_key, 0)
    try:
        listed = api.list_images(token, model.id, label=label, limit=1, offset=position)
    except ApiError as err:
        show_problem(err)
    if listed.count == 0:
        st.info(f"'{label}' has no pictures.")
        return
    if position >= listed.count:
        st.success(f"You have looked at all {listed.count:,} pictures of '{label}'.")
        _start_again(position_key)
        return
    image = listed.data[0]
    try:
        preview = api.thumbnail(token, model.id, image.id, size=PREVIEW_SIZE)
    except ApiError as err:
        show_problem(err)
    st.progress(position / listed.count, text=f"Picture {position + 1:,} of {listed.count:,} in '{label}'")
    picture_column, action_column = st.columns([2, 2])
    # Stretched to the column: small pictures are upscaled, so a person can see what they are judging.
    picture_column.image(preview, caption=image.original_name, width="stretch")
    with action_column:
        st.write(f"{image.width}×{image.height} pixels, used for {'testing' if image.split == 'test' else 'training'}")
        others = [c.name for c in classes if c.name != label]
        # After a discard or a move the next picture slides into this position, so the position stays.
        _actions(token, model, image.id, others, position_key, position, after_edit=position)


def _review_mistakes(
    token: str, model: Model, classes: list[ClassInfo], mistakes: list[LabelMistake], version: int | None
) -> None:
    position_key = state.keyed(state.REVIEW_POSITION, model.id, MISTAKES, version)
    position = st.session_state.get(position_key, 0)
    if position >= len(mistakes):
        st.success(f"You have looked at all {len(mistakes):,} possible label mistakes.")
        _start_again(position_key)
        return
    mistake = mistakes[position]
    try:
        preview = api.thumbnail(token, model.id, mistake.image_id, size=PREVIEW_SIZE)
    except ApiError as err:
        if err.problem.status != 404:
            show_problem(err)
        preview = None
    st.progress(position / len(mistakes), text=f"Possible mistake {position + 1:,} of {len(mistakes):,}")
    picture_column, action_column = st.columns([2, 2])
    if preview is None:
        picture_column.info("This picture has been deleted since.")
    else:
        picture_column.image(preview, width="stretch")
    with action_column:
        st.write(
            f"Filed under **{mistake.given}**; the model is {mistake.confidence:.0%} sure it is "
            f"**{mistake.suggested}**."
        )
        others = [c.name for c in classes if c.name != mistake.given]
        # The list stays as the version found it, so every action moves on to the next entry.
        _actions(
            token,
            model,
            mistake.image_id,
            others,
            position_key,
            position,
            after_edit=position + 1,
            suggested=mistake.suggested,
            present=preview is not None,
        )


def _start_again(position_key: str) -> None:
    if st.button("Start again", key="review.restart"):
        st.session_state[position_key] = 0
        st.rerun()


def _actions(
    token: str,
    model: Model,
    image_id: int,
    others: list[str],
    position_key: str,
    position: int,
    *,
    after_edit: int,
    suggested: str | None = None,
    present: bool = True,
) -> None:
    """The four buttons, each with its key; in this order, so Tab walks them from the most common one.

    `after_edit` is the position after a discard or a move; `suggested` preselects the class to move to (per
    picture; otherwise the choice stays from picture to picture); `present` is False for a picture deleted since.
    """
    target_key = f"review.target.{image_id}" if suggested else "review.target"
    index = others.index(suggested) if suggested in others else 0
    target = st.selectbox("Move to", others, index=index, key=target_key, disabled=not others or not present)
    st.button(
        "Keep" if present else "Next",
        key="review.keep",
        shortcut="K",
        type="primary",
        icon=":material/check:",
        on_click=_go,
        args=(position_key, position + 1),
        width="stretch",
    )
    st.button(
        "Discard",
        key="review.discard",
        shortcut="D",
        icon=":material/delete:",
        disabled=not present,
        on_click=_discard,
        args=(token, model.id, image_id, position_key, after_edit),
        width="stretch",
    )
    st.button(
        f"Move to '{target}'" if target else "Move",
        key="review.move",
        shortcut="M",
        icon=":material/drive_file_move:",
        disabled=not others or not present,
        on_click=_move,
        args=(token, model.id, image_id, target, position_key, after_edit),
        width="stretch",
    )
    st.button(
        "Back",
        key="review.back",
        shortcut="B",
        icon=":material/undo:",
        disabled=position == 0,
        on_click=_go,
        args=(position_key, position - 1),
        width="stretch",
    )


# Callbacks run before the next script run, so each key press costs one run, not two. A refused discard or move
# keeps the position, so the picture stays in front of the person with the reason.
def _go(position_key: str, position: int) -> None:
    st.session_state[position_key] = max(0, position)


def _discard(token: str, model_id: str, image_id: int, position_key: str, after: int) -> None:
    try:
        api.delete_images(token, model_id, [image_id])
    except ApiError as err:
        st.session_state[state.REVIEW_ERROR] = err.problem
        return
    _go(position_key, after)


def _move(token: str, model_id: str, image_id: int, target: str | None, position_key: str, after: int) -> None:
    if not target:
        return
    try:
        api.move_image(token, model_id, image_id, target)
    except ApiError as err:
        st.session_state[state.REVIEW_ERROR] = err.problem
        return
    _go(position_key, after)
