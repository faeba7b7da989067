"""Sign-in plumbing around streamlit-authenticator: the authenticator, and the signed "remember me" cookie.

The cookie is a JWT of the username signed with the UI secret (CLASSIFLY_UI_SECRET); see docs/ARCHITECTURE.md,
"UI sign-in". It is set on the first run *after* sign-in (`remember_sign_in`, called by the frame), because the
sign-in run ends in `st.rerun()`, which would drop the browser component that writes the cookie.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

import streamlit as st
import streamlit_authenticator as stauth

from ui import state
from ui.api_types import SignInAccount

COOKIE_NAME = "classifly_session"
COOKIE_DAYS = 0.5  # as long as an API session (12 hours)
MIN_SECRET_BYTES = 32
# Failed password sign-ins per account before the UI refuses it for a while (like the API's login throttle).
MAX_FAILED_SIGN_INS = int(os.environ.get("CLASSIFLY_LOGIN_MAX_FAILURES", "10"))
FAILED_SIGN_IN_WINDOW_S = float(os.environ.get("CLASSIFLY_LOGIN_FAILURE_WINDOW_S", "300"))


class FailedSignIns:
    """Recent failed password sign-ins per account, shared by every browser session of this UI process: the UI
    checks passwords itself (against the API's bcrypt hashes), so it throttles guessing itself too."""

    def __init__(self, window_s: float = FAILED_SIGN_IN_WINDOW_S, clock=time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self.times: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def count(self, username: str) -> int:
        with self.lock:
            return len(self._recent(username))

    def record(self, username: str) -> None:
        with self.lock:
            self.times.setdefault(username, deque()).append(self.clock())

    def clear(self, username: str) -> None:
        with self.lock:
            self.times.pop(username, None)

    def _recent(self, username: str) -> deque[float]:
        recent = self.times.get(username, deque())
        while recent and recent[0] <= self.clock() - self.window_s:
            recent.popleft()
        return recent


FAILED_SIGN_INS = FailedSignIns()


def cookie_secret() -> str | None:
    """The cookie-signing key the runtime passes by environment, or None when it is missing or too short."""
    secret = os.environ.get("CLASSIFLY_UI_SECRET", "")
    return secret if len(secret.encode()) >= MIN_SECRET_BYTES else None


def authenticator(accounts: list[SignInAccount], secret: str) -> stauth.Authenticate:
    """An authenticator over these accounts' bcrypt hashes (already hashed: auto_hash=False), each with its
    recent failed sign-ins (`FAILED_SIGN_INS`), which streamlit-authenticator counts up on a wrong password and
    refuses past `max_login_attempts` (see `note_failed_sign_ins`)."""
    credentials = {
        "usernames": {
            account.username.lower(): {
                "name": account.username,
                "password": account.password_hash,
                "roles": ["admin"] if account.is_admin else [],
                "failed_login_attempts": FAILED_SIGN_INS.count(account.username.lower()),
            }
            for account in accounts
        }
    }
    signer = stauth.Authenticate(
        credentials, cookie_name=COOKIE_NAME, cookie_key=secret, cookie_expiry_days=COOKIE_DAYS, auto_hash=False
    )
    signer.classifly_credentials = credentials  # the same dict the authenticator counts failures in
    return signer


def note_failed_sign_ins(signer: stauth.Authenticate) -> None:
    """Carry the failures streamlit-authenticator counted in this run over to `FAILED_SIGN_INS`."""
    for username, entry in signer.classifly_credentials["usernames"].items():
        for _ in range(entry.get("failed_login_attempts", 0) - FAILED_SIGN_INS.count(username)):
            FAILED_SIGN_INS.record(username)


def remember_sign_in() -> None:
    """Write the signed cookie for the user who just signed in with a password (once)."""
    secret = cookie_secret()
    if not st.session_state.pop(state.COOKIE_PENDING, False) or secret is None:
        return
    with st.sidebar:  # the cookie component is an invisible iframe; keep it out of the page's layout
        authenticator([], secret).cookie_controller.set_cookie()
