"""Classifly's web app: the frame (page setup, sign-in state, sidebar) and the router (`st.navigation`).

Signed out, the sign-in screen (ui/sign_in.py) is drawn in place of any page; signed in, the pages below.
Every page talks to the REST API through `ui/api_client.py` only, so the UI can never do what the API cannot.

The pages live in `ui/views/`, not `ui/pages/` as STYLE.md suggests: Streamlit treats a `pages/` folder next
to the main script as a legacy multipage app until `st.navigation` has run once in the process, so the first
visit to a bookmarked page after a restart would run that page without this frame (and AppTest reruns would
skip the frame every time).
"""

from __future__ import annotations

import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import User
from ui.auth import remember_sign_in
from ui.sign_in import render_sign_in

st.set_page_config(page_title="Classifly", page_icon="🌼", layout="wide")


def end_api_session() -> None:
    """Revoke the API session; the sign-in screen then deletes the signed cookie (it owns the authenticator)."""
    token = st.session_state.pop(state.API_TOKEN, None)
    st.session_state.pop(state.USER, None)
    if token:
        try:
            api.logout(token)
        except ApiError:
            pass  # already expired or revoked, or the API is down: the session is over either way


def request_sign_out() -> None:
    st.session_state[state.SIGN_OUT] = True


user: User | None = st.session_state.get(state.USER)
# A sign-out comes from the sidebar or the account page (callbacks, so they run before this line), or from an
# ended session (ui.components.show_problem).
if user is not None and st.session_state.get(state.SIGN_OUT):
    end_api_session()
    user = None
if user is not None:
    with st.sidebar:
        st.caption(f"Signed in as **{user.username}**")
        st.button("Sign out", key="frame.sign_out", icon=":material/logout:", on_click=request_sign_out)

pages: dict[str, list[st.Page]] = {
    "": [
        st.Page("views/models.py", title="Models", icon=":material/category:", default=True),
        st.Page("views/model.py", title="Model", icon=":material/image:", visibility="hidden"),
    ],
    "Your account": [
        st.Page("views/tokens.py", title="API tokens", icon=":material/key:"),
        st.Page("views/account.py", title="Account and storage", icon=":material/person:"),
    ],
}
if user is None or user.is_admin:
    pages["Administration"] = [st.Page("views/admin.py", title="Cluster", icon=":material/dns:")]

if user is None:
    # The requested page stays in the URL while the sign-in screen is drawn in its place; after signing in,
    # the rerun lands on it (a bookmarked model, for instance). Nothing of the page itself runs.
    st.navigation(pages, position="hidden")
    render_sign_in()
else:
    remember_sign_in()
    st.navigation(pages).run()
