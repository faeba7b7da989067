"""Review mode: one picture at a time, keep / discard / move to another class, with keyboard shortcuts."""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import ClassInfo, Model
from ui.components import show_problem
from ui.sections.gallery import choose_class

PREVIEW_SIZE = 512


def render_review(token: str, model: Model, classes: list[ClassInfo]) -> None:
    st.caption(
        "Look at each picture once: **K** keeps it, **D** discards it, **M** moves it to the class chosen on the "
        "right, **B** goes back. When training arrives, review will start with the pictures the model thinks "
        "are labelled wrong."
    )
    label = choose_class(classes, key=state.keyed("review.class", model.id), label="Review the class")
    if label is None:
        st.info("No pictures to review yet.")
        return
    position_key = state.keyed(state.REVIEW_POSITION, model.id, label)
    position = st.session_state.get(position_key, 0)
    problem = st.session_state.pop(state.REVIEW_ERROR, None)
    if problem is not None:
        st.error(problem.title)
        st.caption(problem.detail)
    try:
        listed = api.list_images(token, model.id, label=label, limit=1, offset=position)
    except ApiError as err:
        show_problem(err)
    if listed.count == 0:
        st.info(f"'{label}' has no pictures.")
        return
    if position >= listed.count:
        st.success(f"You have looked at all {listed.count:,} pictures of '{label}'.")
        if st.button("Start again", key="review.restart"):
            st.session_state[position_key] = 0
            st.rerun()
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
        _actions(token, model, image.id, [c.name for c in classes if c.name != label], position_key, position)


def _actions(token: str, model: Model, image_id: int, others: list[str], position_key: str, position: int) -> None:
    """The four buttons, each with its key; in this order, so Tab walks them from the most common one."""
    target = st.selectbox("Move to", others, key="review.target", disabled=not others)
    st.button(
        "Keep",
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
        on_click=_discard,
        args=(token, model.id, image_id),
        width="stretch",
    )
    st.button(
        f"Move to '{target}'" if target else "Move",
        key="review.move",
        shortcut="M",
        icon=":material/drive_file_move:",
        disabled=not others,
        on_click=_move,
        args=(token, model.id, image_id, target),
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


# Callbacks run before the next script run, so each key press costs one run, not two. After a discard or a
# move the next picture slides into this position, so the position stays.
def _go(position_key: str, position: int) -> None:
    st.session_state[position_key] = max(0, position)


def _discard(token: str, model_id: str, image_id: int) -> None:
    try:
        api.delete_images(token, model_id, [image_id])
    except ApiError as err:
        st.session_state[state.REVIEW_ERROR] = err.problem


def _move(token: str, model_id: str, image_id: int, target: str | None) -> None:
    if not target:
        return
    try:
        api.move_image(token, model_id, image_id, target)
    except ApiError as err:
        st.session_state[state.REVIEW_ERROR] = err.problem
