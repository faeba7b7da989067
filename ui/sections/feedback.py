"""Telling the model whether an answer was right: a "Right" button and a "Wrong" pop-over that asks for the right
class. Shared by the Classify and History tabs; feedback feeds the accuracy-in-use figures of the History tab."""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Feedback


def feedback_words(feedback: Feedback | None) -> str:
    """How the owner judged an answer, in a few words."""
    if feedback is None:
        return "not checked yet"
    if feedback.correct:
        return ":green[:material/check: right]"
    if feedback.label:
        return f":red[:material/close: wrong], it is '{feedback.label}'"
    return ":red[:material/close: wrong]"


def given_feedback(task_id: str, feedback: Feedback | None) -> Feedback | None:
    """The feedback given in this browser session, else what the API last said."""
    given = st.session_state.get(state.FEEDBACK_GIVEN, {}).get(task_id)
    return given or feedback


def render_feedback(token: str, task_id: str, answer: str, classes: list[str], *, key: str) -> None:
    """ "Right" and "Wrong …" (with the right class) for one answer; a later choice replaces the earlier one."""
    right_column, wrong_column = st.columns(2)
    right_column.button(
        "Right",
        key=f"{key}.right",
        icon=":material/thumb_up:",
        on_click=_send,
        args=(token, task_id),
        kwargs={"correct": True},
        help="The answer is right.",
    )
    others = [name for name in classes if name != answer]
    with wrong_column.popover("Wrong", icon=":material/thumb_down:", help="Say which class it really is."):
        if not others:
            st.caption("This version knows no other class.")
            return
        choice_key = f"{key}.label"
        st.selectbox("It is", others, key=choice_key)
        st.button("Save", key=f"{key}.correct", type="primary", on_click=_correct, args=(token, task_id, choice_key))


def show_feedback_error() -> None:
    """A refusal met by a Right / Save click (callbacks cannot show it themselves), as one sentence."""
    problem = st.session_state.pop(state.FEEDBACK_ERROR, None)
    if problem is not None:
        st.error(problem.title)
        st.caption(problem.detail)


def _correct(token: str, task_id: str, choice_key: str) -> None:
    _send(token, task_id, label=st.session_state.get(choice_key))


def _send(token: str, task_id: str, *, correct: bool | None = None, label: str | None = None) -> None:
    # A callback, so the run it triggers already shows the new state.
    try:
        task = api.give_feedback(token, task_id, correct=correct, label=label)
    except ApiError as err:
        st.session_state[state.FEEDBACK_ERROR] = err.problem
        return
    st.session_state.setdefault(state.FEEDBACK_GIVEN, {})[task_id] = task.feedback
