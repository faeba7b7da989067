"""Widgets and helpers every page shares: the error display, the signed-in token, plain-words formatting."""

from __future__ import annotations

from typing import NoReturn

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Model, User

STATUS_WORDS = {
    "needs_data": ("Needs pictures", "Add at least two classes with pictures."),
    "ready_to_train": ("Ready to train", "The pictures are in; start a training on the model's Train tab."),
    "ready": ("Ready", "A trained version answers requests."),
}


def show_problem(err: ApiError, *, stop: bool = True) -> None:
    """Show what went wrong as one sentence and what to do (never a traceback), then stop the page."""
    problem = err.problem
    if problem.status == 401 and st.session_state.get(state.API_TOKEN):
        # The session ended (expired or revoked): sign out fully, so the password is asked again.
        st.session_state[state.SIGN_OUT] = True
        st.error("Your session has ended.")
        st.caption("Sign in again to go on.")
        st.button("Sign in again", key="problem.sign_in_again")  # any click reruns; the frame signs out
        st.stop()
    st.error(problem.title)
    st.caption(problem.detail)
    if stop:
        st.stop()


def api_token() -> str:
    """The signed-in user's API session token (the frame only shows pages to signed-in users)."""
    token = st.session_state.get(state.API_TOKEN)
    if not token:
        st.warning("Sign in to see this page.")
        st.stop()
    return token


def current_user() -> User | None:
    return st.session_state.get(state.USER)


def notice(message: str) -> None:
    """Keep a success message for the next run (shown by `show_notice`), e.g. right before `st.rerun()`."""
    st.session_state[state.NOTICE] = message


def show_notice() -> None:
    message = st.session_state.pop(state.NOTICE, None)
    if message:
        st.success(message)


def stop_with(message: str) -> NoReturn:
    st.info(message)
    st.stop()


def human_bytes(num_bytes: int) -> str:
    """1536 -> '1.5 KB' (powers of 1024, as the quota is set)."""
    value = float(num_bytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"


def human_duration(seconds: int) -> str:
    """600 -> '10 minutes'."""
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day" + ("s" if days != 1 else "")
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour" + ("s" if hours != 1 else "")
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds} seconds"


def rough_duration(seconds: float) -> str:
    """A time left in round words: 40 -> 'less than a minute', 250 -> 'about 4 minutes'."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 90:
        return f"about {minutes} minute" + ("s" if minutes != 1 else "")
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min"


def short_duration(seconds: float) -> str:
    """12.4 -> '12 s', 220 -> '3 min 40 s', 3720 -> '1 h 2 min'."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def percent(share: float | None) -> str:
    """0.9234 -> '92.3%'; None -> '–'."""
    return "–" if share is None else f"{share:.1%}"


def status_words(model: Model) -> tuple[str, str]:
    """(short status, what it means) for a model."""
    return STATUS_WORDS.get(model.status, (model.status.replace("_", " ").capitalize(), ""))


def target_words(target_accuracy: float | None) -> str:
    return "as good as possible" if target_accuracy is None else f"{target_accuracy:.0%} of pictures right"


def coming(capability: str, what: str, *, plural: bool = False) -> None:
    """An honest note for a capability the API does not offer yet."""
    verb = "arrive" if plural else "arrives"
    st.info(f"{capability} {verb} in a coming version: {what}", icon=":material/schedule:")


def open_model(model_id: str) -> None:
    """Go to a model's page (its id also goes in the URL, so the page can be bookmarked)."""
    st.session_state[state.MODEL_ID] = model_id
    st.switch_page("views/model.py", query_params={"model": model_id})


@st.cache_data(max_entries=500, show_spinner=False)
def sample_image(token: str, model_id: str, updated_at: object) -> bytes | None:
    """A model's sample picture (cached per token, model and last change: the token keeps users apart)."""
    try:
        return api.sample_image(token, model_id)
    except ApiError:
        return None
