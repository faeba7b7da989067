"""The sign-in screen: sign in (streamlit-authenticator: bcrypt hashes, a signed cookie) or create an account.

The password is checked here against hashes the API gives only to this UI (its service token); the API then
issues this user a normal session token. See docs/ARCHITECTURE.md, "UI sign-in". The frame draws this screen in
place of whatever page the URL asked for, so after signing in the user lands on that page.
"""

from __future__ import annotations

import re

import streamlit as st
import streamlit_authenticator as stauth

from ui import api_client as api
from ui import state
from ui.api_client import ApiError
from ui.auth import FAILED_SIGN_INS, MAX_FAILED_SIGN_INS, authenticator, cookie_secret, note_failed_sign_ins
from ui.components import show_problem

USERNAME_RULE = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")  # as the API's RegisterIn
MIN_PASSWORD_LENGTH = 8


def render_sign_in() -> None:
    """Draw the sign-in screen; on success store the API session and rerun."""
    st.set_page_config(page_title="Sign in · Classifly")
    st.title("Classifly")
    st.write("Turn folders of labelled pictures into image classifiers.")
    secret = cookie_secret()
    if secret is None:
        st.error("Sign-in is not available")
        st.caption("The web UI was started without its cookie secret. Start it with 'classifly up'.")
        st.stop()
    try:
        accounts = api.sign_in_accounts()  # fresh at every attempt, so an account made a moment ago can sign in
    except ApiError as err:
        show_problem(err)
    notice_area = st.container()
    sign_in_tab, register_tab = st.tabs(["Sign in", "Create an account"])
    # The authenticator's cookie components are invisible iframes that take a moment to load: keep them below
    # everything, so nothing jumps while they do.
    with st.container():
        signer = authenticator(accounts, secret)
        if st.session_state.pop(state.SIGN_OUT, False):
            if st.session_state.get(state.AUTH_STATUS):
                signer.logout(location="unrendered")  # forgets the user and deletes the cookie
            st.session_state[state.SIGNED_OUT] = True
    if st.session_state.get(state.SIGNED_OUT):
        notice_area.success("You are signed out.")
    with sign_in_tab:
        sign_in_form(signer)
    with register_tab:
        register_form()


def sign_in_form(signer: stauth.Authenticate) -> None:
    try:
        signer.login(
            location="main",
            fields={"Form name": "Sign in", "Username": "Username", "Password": "Password", "Login": "Sign in"},
            key="sign_in",
            callback=remember_after_password,
            max_login_attempts=MAX_FAILED_SIGN_INS,
        )
    except stauth.LoginError:  # too many wrong passwords for this account lately (the password is not checked)
        st.error("Too many failed sign-ins for this account.")
        st.caption("Wait a few minutes, then try again. If you forgot your password, ask your administrator.")
        return
    finally:
        note_failed_sign_ins(signer)
    status = st.session_state.get(state.AUTH_STATUS)
    if status:
        FAILED_SIGN_INS.clear(st.session_state[state.AUTH_USERNAME])
        # Password (or signed cookie) verified: ask the API for this user's session.
        try:
            session = api.session_for(st.session_state[state.AUTH_USERNAME])
        except ApiError as err:
            signer.logout(location="unrendered")
            show_problem(err)
        st.session_state[state.API_TOKEN] = session.access_token
        st.session_state[state.USER] = session.user
        st.session_state.pop(state.SIGNED_OUT, None)
        st.rerun()
    elif status is False:
        st.error("The username or password is wrong.")
        st.caption("Check both and try again, or create an account on the next tab.")


def remember_after_password(details: dict) -> None:
    # Called on a password sign-in only (not on a cookie one): the next run writes the signed cookie, so a
    # visit within its lifetime does not extend it.
    st.session_state[state.COOKIE_PENDING] = True


def register_form() -> None:
    with st.form("register"):
        st.subheader("Create an account")
        username = st.text_input("Username", help="3 to 64 letters, digits or . _ @ -")
        password = st.text_input("Password", type="password", help="At least 8 characters")
        repeated = st.text_input("Repeat the password", type="password")
        if not st.form_submit_button("Create account"):
            return
    problem = registration_problem(username, password, repeated)
    if problem:
        st.error(problem)
        return
    try:
        api.register(username, password)
    except ApiError as err:
        show_problem(err, stop=False)
    else:
        st.success(f"Account '{username}' created. Sign in with it on the 'Sign in' tab.")


def registration_problem(username: str, password: str, repeated: str) -> str | None:
    """What is wrong with a sign-up, in one sentence, before asking the API."""
    if not USERNAME_RULE.match(username):
        return "Choose a username of 3 to 64 letters, digits or . _ @ -"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters."
    if password != password.strip():
        # streamlit-authenticator strips what is typed at sign-in, so such a password could never sign in here.
        return "A password cannot start or end with a space."
    if password != repeated:
        return "The two passwords differ. Type the same password twice."
    return None
