"""The frame and the sign-in page: sign in (password checked against the API's hashes), register, sign out."""

from __future__ import annotations

import functools

import bcrypt
import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import APP, NOW, TOKEN, FakeApi, assert_no_exception, signed_in_app, texts
from ui import state
from ui.api_types import Session, SignInAccount, User

PASSWORD = "password123"


@functools.cache
def alice_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


@pytest.fixture
def accounts(api: FakeApi) -> FakeApi:
    api.returns("sign_in_accounts", [SignInAccount(username="alice", password_hash=alice_hash())])
    api.answers_with(
        "session_for",
        lambda username: Session(access_token=TOKEN, expires_at=NOW, user=User(id="usr_alice", username=username)),
    )
    api.returns("list_models", [])
    return api


def signed_out_app() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=15)
    app.run()
    return app


def sign_in(app: AppTest, username: str, password: str) -> None:
    inputs = [t for t in app.text_input if t.form_id == "sign_in"]
    inputs[0].input(username)
    inputs[1].input(password)
    next(b for b in app.button if b.label == "Sign in").click().run()


def test_signed_out_shows_only_sign_in_and_register(accounts: FakeApi) -> None:
    app = signed_out_app()

    assert_no_exception(app)
    assert [tab.label for tab in app.tabs] == ["Sign in", "Create an account"]
    assert "Sign in" in [b.label for b in app.button] and "Create account" in [b.label for b in app.button]
    assert accounts.called("list_models") == []


def test_right_password_gets_an_api_session_and_opens_the_models(accounts: FakeApi) -> None:
    app = signed_out_app()

    sign_in(app, "Alice", PASSWORD)

    assert_no_exception(app)
    assert [args for args, _ in accounts.called("session_for")] == [("alice",)]
    assert app.session_state[state.API_TOKEN] == TOKEN
    assert app.title[0].value == "Models"
    assert "Signed in as **alice**" in [c.value for c in app.sidebar.caption]


def test_wrong_password_is_refused_without_asking_for_a_session(accounts: FakeApi) -> None:
    app = signed_out_app()

    sign_in(app, "alice", "not the password")

    assert "The username or password is wrong." in [e.value for e in app.error]
    assert accounts.called("session_for") == []
    assert state.API_TOKEN not in app.session_state


def test_accounts_are_read_fresh_at_each_attempt(accounts: FakeApi) -> None:
    app = signed_out_app()
    accounts.returns(
        "sign_in_accounts",
        [
            SignInAccount(username="alice", password_hash=alice_hash()),
            SignInAccount(username="bob", password_hash=alice_hash()),
        ],
    )

    sign_in(app, "bob", PASSWORD)

    assert [args for args, _ in accounts.called("session_for")] == [("bob",)]


def test_api_down_says_so_in_plain_words(api: FakeApi) -> None:
    api.fails("sign_in_accounts", "The Classifly API does not answer", "Start the platform with 'make run'.")

    app = signed_out_app()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["The Classifly API does not answer"]
    assert "Start the platform with 'make run'." in [c.value for c in app.caption]


def test_without_the_cookie_secret_sign_in_is_unavailable(accounts: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFLY_UI_SECRET", "too short")

    app = signed_out_app()

    assert [e.value for e in app.error] == ["Sign-in is not available"]
    assert accounts.called("sign_in_accounts") == []


@pytest.mark.parametrize(
    ("username", "password", "repeated", "message"),
    [
        pytest.param("al", PASSWORD, PASSWORD, "Choose a username of 3", id="short-name"),
        pytest.param("carol", "short", "short", "at least 8 characters", id="short-password"),
        pytest.param("carol", PASSWORD, "password124", "The two passwords differ", id="mismatch"),
        pytest.param("carol", " password123", " password123", "cannot start or end with a space", id="spaces"),
    ],
)
def test_register_checks_before_calling_the_api(
    accounts: FakeApi, username: str, password: str, repeated: str, message: str
) -> None:
    app = signed_out_app()

    register(app, username, password, repeated)

    assert any(message in e.value for e in app.error), [e.value for e in app.error]
    assert accounts.called("register") == []


def register(app: AppTest, username: str, password: str, repeated: str) -> None:
    fields = [t for t in app.text_input if t.form_id == "register"]
    for field, value in zip(fields, (username, password, repeated), strict=True):
        field.input(value)
    next(b for b in app.button if b.label == "Create account").click().run()


def test_register_creates_the_account(accounts: FakeApi) -> None:
    accounts.returns("register", User(id="usr_carol", username="carol"))
    app = signed_out_app()

    register(app, "carol", PASSWORD, PASSWORD)

    assert accounts.called("register") == [(("carol", PASSWORD), {})]
    assert "Account 'carol' created" in texts(app)


def test_register_shows_the_api_refusal(accounts: FakeApi) -> None:
    accounts.fails("register", "Conflict", "The username 'carol' is taken. Choose another one.", status=409)
    app = signed_out_app()

    register(app, "carol", PASSWORD, PASSWORD)

    assert "Conflict" in [e.value for e in app.error]
    assert "The username 'carol' is taken. Choose another one." in [c.value for c in app.caption]
    assert [t.label for t in app.tabs] == ["Sign in", "Create an account"]  # the page goes on


def test_sign_out_ends_the_api_session_and_shows_sign_in(accounts: FakeApi) -> None:
    accounts.returns("logout", None)
    app = signed_in_app()
    app.session_state[state.AUTH_STATUS] = True
    app.session_state[state.AUTH_USERNAME] = "alice"
    app.run()

    app.sidebar.button[0].click().run()

    assert_no_exception(app)
    assert accounts.called("logout") == [((TOKEN,), {})]
    assert state.API_TOKEN not in app.session_state
    assert "You are signed out." in [s.value for s in app.success]
    assert app.session_state[state.AUTH_STATUS] is None


def test_an_ended_session_asks_to_sign_in_again(accounts: FakeApi) -> None:
    accounts.fails("list_models", "Unauthorized", "This token has expired.", status=401)
    accounts.returns("logout", None)
    app = signed_in_app()
    app.run()

    assert "Your session has ended." in [e.value for e in app.error]
    app.button(key="problem.sign_in_again").click().run()

    assert [t.label for t in app.tabs] == ["Sign in", "Create an account"]
    assert state.API_TOKEN not in app.session_state


@pytest.fixture
def no_failed_sign_ins():
    from ui.auth import FAILED_SIGN_INS

    FAILED_SIGN_INS.times.clear()
    yield FAILED_SIGN_INS
    FAILED_SIGN_INS.times.clear()


def test_too_many_wrong_passwords_lock_the_account_even_for_the_right_one(
    accounts: FakeApi, no_failed_sign_ins
) -> None:
    from ui.auth import MAX_FAILED_SIGN_INS

    app = signed_out_app()
    for _ in range(MAX_FAILED_SIGN_INS):
        sign_in(app, "alice", "a guess")
        assert "The username or password is wrong." in [e.value for e in app.error]

    sign_in(app, "alice", PASSWORD)

    assert "Too many failed sign-ins for this account." in [e.value for e in app.error]
    assert accounts.called("session_for") == [] and state.API_TOKEN not in app.session_state
    # another browser session is refused too: the count belongs to the account, not to the session
    other = signed_out_app()
    sign_in(other, "alice", PASSWORD)
    assert "Too many failed sign-ins for this account." in [e.value for e in other.error]


def test_failed_sign_ins_count_only_within_the_window_and_a_success_clears_them() -> None:
    from ui.auth import FailedSignIns

    now = [1000.0]
    failures = FailedSignIns(window_s=300, clock=lambda: now[0])
    failures.record("alice")
    now[0] += 200
    failures.record("alice")
    assert failures.count("alice") == 2 and failures.count("bob") == 0
    now[0] += 150  # the first failure is now older than the window
    assert failures.count("alice") == 1
    failures.clear("alice")
    assert failures.count("alice") == 0
