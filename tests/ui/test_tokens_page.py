"""The API tokens page: create (the secret shown once), list with states, revoke, errors."""

from __future__ import annotations

from datetime import timedelta

from tests.ui.conftest import NOW, TOKEN, FakeApi, assert_no_exception, signed_in_app, texts
from ui import state
from ui.api_types import Token, TokenCreated

PAGE = "views/tokens.py"
SECRET = "cfy_the-secret-shown-once"


def token(token_id: str, name: str, **overrides) -> Token:
    return Token(id=token_id, name=name, hint="cfy_abcd", created_at=NOW, **overrides)


def test_create_shows_the_secret_once(api: FakeApi) -> None:
    api.returns("list_tokens", [])
    api.returns(
        "create_token", TokenCreated(id="tok_1", name="nightly", hint="cfy_the-", created_at=NOW, secret=SECRET)
    )
    app = signed_in_app(PAGE)
    app.run()

    app.text_input[0].input("nightly")
    app.radio[0].set_value("1 year")
    next(b for b in app.button if b.label == "Create token").click().run()

    assert_no_exception(app)
    assert api.called("create_token") == [((TOKEN, "nightly", 365), {})]
    assert [c.value for c in app.code] == [SECRET]
    assert "shown only this once" in texts(app)

    app.button(key="tokens.copied").click().run()

    assert SECRET not in texts(app) and [c.value for c in app.code] == []
    assert state.NEW_TOKEN not in app.session_state


def test_a_token_needs_a_name(api: FakeApi) -> None:
    api.returns("list_tokens", [])
    app = signed_in_app(PAGE)
    app.run()

    next(b for b in app.button if b.label == "Create token").click().run()

    assert api.called("create_token") == []
    assert any("Say what the token is for" in e.value for e in app.error)


def test_list_shows_states_and_revokes_an_active_token(api: FakeApi) -> None:
    api.returns(
        "list_tokens",
        [
            token("tok_1", "nightly", expires_at=NOW + timedelta(days=3650)),
            token("tok_2", "old", revoked_at=NOW),
            token("tok_3", "stale", expires_at=NOW - timedelta(days=1000)),
        ],
    )
    api.returns("revoke_token", token("tok_1", "nightly", revoked_at=NOW))
    app = signed_in_app(PAGE)
    app.run()

    table = app.dataframe[0].value
    assert list(table["state"]) == ["active", "revoked", "expired"]
    assert app.selectbox(key="tokens.revoke_choice").options == ["nightly (cfy_abcd…)"]

    app.button(key="tokens.revoke").click().run()

    assert api.called("revoke_token") == [((TOKEN, "tok_1"), {})]
    assert any("Revoked 'nightly" in s.value for s in app.success)


def test_errors_are_shown_plainly(api: FakeApi) -> None:
    api.fails("list_tokens", "The Classifly API does not answer", "Start the platform with 'make run'.")
    app = signed_in_app(PAGE)
    app.run()

    assert_no_exception(app)
    assert [e.value for e in app.error] == ["The Classifly API does not answer"]
