"""The web app's pages against the real running API (Ray + Serve over HTTP), driven with AppTest.

Sign-in goes through the real service routes with a service token made the way `classifly up` makes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from cluster import runtime
from tests.factories import make_zip
from tests.integration.conftest import Platform
from ui import state

pytestmark = pytest.mark.ray

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
PASSWORD = "correct horse battery"


@pytest.fixture
def ui_env(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment `classifly up` gives the UI process, here given to this process (AppTest runs in it)."""
    env = runtime.ui_env(platform.settings, runtime.create_service_token(platform.settings))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def run_until(app: AppTest, done, deadline_s: float, what: str) -> None:
    """Rerun the app (as the browser's fragment timer would) until `done(app)` or the deadline."""
    end = time.monotonic() + deadline_s
    while not done(app):
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.5)
        app.run()


def test_sign_in_create_a_model_import_a_zip_and_see_it(platform: Platform, ui_env, tmp_path: Path) -> None:
    created = platform.http.post("/v1/auth/register", json={"username": "uma", "password": PASSWORD})
    assert created.status_code == 201, created.text
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()

    form = [t for t in app.text_input if t.form_id == "sign_in"]
    form[0].input("uma")
    form[1].input(PASSWORD)
    next(b for b in app.button if b.label == "Sign in").click().run()

    assert not app.exception, app.exception
    assert app.title[0].value == "Models"
    session = app.session_state[state.API_TOKEN]
    me = platform.http.get("/v1/me", headers={"Authorization": f"Bearer {session}"})
    assert me.json()["username"] == "uma"

    app.text_input[0].input("Pets")
    next(b for b in app.button if b.label == "Create model").click().run()
    assert app.title[0].value == "Pets"
    model_id = app.session_state[state.MODEL_ID]

    zip_path = make_zip(tmp_path / "pets.zip", {"cat": 6, "dog": 5}, size=(24, 16))
    app.file_uploader(key=state.keyed("import.file", model_id, 0)).set_value(
        ("pets.zip", zip_path.read_bytes(), "application/zip")
    ).run()
    app.button(key="import.start").click().run()
    run_until(
        app, lambda a: state.keyed(state.IMPORT_JOB, model_id) not in a.session_state, 120, "the import to finish"
    )

    assert not app.exception, app.exception
    assert "Added 11 pictures in 2 classes." in [s.value for s in app.success]
    assert app.metric[0].value == "11"
    assert len(app.image) == 6  # the first class (cat), as thumbnails from the real API
    assert any(e.label.startswith("Last import") for e in app.expander)

    app.toggle(key=state.keyed("review.on", model_id)).set_value(True).run()
    app.button(key="review.move").click().run()  # the first cat becomes a dog
    classes = platform.http.get(f"/v1/models/{model_id}/classes", headers={"Authorization": f"Bearer {session}"}).json()
    assert {c["name"]: c["total_images"] for c in classes["data"]} == {"cat": 5, "dog": 6}

    app.button(key="frame.sign_out").click().run()

    assert [t.label for t in app.tabs] == ["Sign in", "Create an account"]
    refused = httpx.get(f"{platform.url}/v1/me", headers={"Authorization": f"Bearer {session}"})
    assert refused.status_code == 401


def test_a_wrong_password_gets_no_session(platform: Platform, ui_env) -> None:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()

    form = [t for t in app.text_input if t.form_id == "sign_in"]
    form[0].input("uma")
    form[1].input("not the password")
    next(b for b in app.button if b.label == "Sign in").click().run()

    assert "The username or password is wrong." in [e.value for e in app.error]
    assert state.API_TOKEN not in app.session_state
