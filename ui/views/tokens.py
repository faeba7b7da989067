"""API tokens for programs and scripts: create one (its secret is shown once), see them, revoke them."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.api_types import Token
from ui.components import api_token, notice, show_notice, show_problem

LIFETIMES = {"30 days": 30, "90 days": 90, "1 year": 365}

token = api_token()
st.title("API tokens")
st.write(
    "A token lets a program use the API as you: send it as `Authorization: Bearer <token>`. "
    "Give each program its own token, so you can revoke one without stopping the others."
)
show_notice()

created = st.session_state.get(state.NEW_TOKEN)
if created is not None:
    with st.container(border=True):
        st.success(f"Token '{created.name}' created. Copy it now: it is shown only this once.")
        st.code(created.secret, language=None)
        if st.button("I have copied it", key="tokens.copied", type="primary"):
            del st.session_state[state.NEW_TOKEN]
            st.rerun()

with st.form("tokens.create", clear_on_submit=True):
    st.subheader("New token", anchor=False)
    name = st.text_input("What is it for?", placeholder="e.g. nightly upload script", max_chars=100)
    lifetime = st.radio("Valid for", list(LIFETIMES), index=1, horizontal=True)
    if st.form_submit_button("Create token", type="primary"):
        if not name.strip():
            st.error("Say what the token is for, so you can recognise it later.")
        else:
            try:
                st.session_state[state.NEW_TOKEN] = api.create_token(token, name.strip(), LIFETIMES[lifetime])
            except ApiError as err:
                show_problem(err)
            st.rerun()

try:
    tokens = api.list_tokens(token)
except ApiError as err:
    show_problem(err)


def state_of(item: Token) -> str:
    if item.revoked_at is not None:
        return "revoked"
    if item.expires_at is not None and item.expires_at <= datetime.now(UTC):
        return "expired"
    return "active"


st.subheader("Your tokens", anchor=False)
if not tokens:
    st.info("No tokens yet.")
else:
    table = pd.DataFrame(
        [
            {
                "name": t.name,
                "starts with": t.hint + "…",
                "state": state_of(t),
                "created": t.created_at,
                "expires": t.expires_at,
                "last used": t.last_used_at,
            }
            for t in tokens
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            "expires": st.column_config.DatetimeColumn(format="YYYY-MM-DD"),
            "last used": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )
    active = [t for t in tokens if state_of(t) == "active"]
    if active:
        names = {t.id: f"{t.name} ({t.hint}…)" for t in active}
        chosen = st.selectbox("Revoke a token", list(names), format_func=names.get, key="tokens.revoke_choice")
        if st.button("Revoke", key="tokens.revoke", help="Programs using it are refused from now on."):
            try:
                api.revoke_token(token, chosen)
            except ApiError as err:
                show_problem(err)
            notice(f"Revoked '{names[chosen]}'.")
            st.rerun()
