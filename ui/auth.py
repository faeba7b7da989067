"""Sign-in plumbing around streamlit-authenticator: the authenticator, and the signed "remember me" cookie.

The cookie is a JWT of the username signed with the UI secret (CLASSIFLY_UI_SECRET); see docs/ARCHITECTURE.md,
"UI sign-in". It is set on the first run *after* sign-in (`remember_sign_in`, called by the frame), because the
sign-in run ends in `st.rerun()`, which would drop the browser component that writes the cookie.
"""

from __future__ import annotations

import os

import streamlit as st
import streamlit_authenticator as stauth

from ui import state
from ui.api_types import SignInAccount

COOKIE_NAME = "classifly_session"
COOKIE_DAYS = 0.5  # as long as an API session (12 hours)
MIN_SECRET_BYTES = 32


def cookie_secret() -> str | None:
    """The cookie-signing key the runtime passes by environment, or None when it is missing or too short."""
    secret = os.environ.get("CLASSIFLY_UI_SECRET", "")
    return secret if len(secret.encode()) >= MIN_SECRET_BYTES else None


def authenticator(accounts: list[SignInAccount], secret: str) -> stauth.Authenticate:
    """An authenticator over these accounts' bcrypt hashes (already hashed: auto_hash=False)."""
    credentials = {
        "usernames": {
            account.username.lower(): {
                "name": account.username,
                "password": account.password_hash,
                "roles": ["admin"] if account.is_admin else [],
            }
            for account in accounts
        }
    }
    return stauth.Authenticate(
        credentials, cookie_name=COOKIE_NAME, cookie_key=secret, cookie_expiry_days=COOKIE_DAYS, auto_hash=False
    )


def remember_sign_in() -> None:
    """Write the signed cookie for the user who just signed in with a password (once)."""
    secret = cookie_secret()
    if not st.session_state.pop(state.COOKIE_PENDING, False) or secret is None:
        return
    with st.sidebar:  # the cookie component is an invisible iframe; keep it out of the page's layout
        authenticator([], secret).cookie_controller.set_cookie()
