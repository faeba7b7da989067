"""One real-browser smoke test: headless Chromium drives the real web app against the real platform.

Sign in (the account is registered through the API first), create a model, upload a zip, see the gallery and
the class chart, and come back signed in after a reload (the signed cookie). Screenshots go to
test-output/browser/ so a person can look at what the app looked like.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster import runtime
from tests.factories import make_zip
from tests.integration.conftest import Platform, free_port, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "browser"
PASSWORD = "correct horse battery"
UI_START_DEADLINE_S = 60
STEP_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def ui_url(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`streamlit run ui/app.py` with the environment `classifly up` would give it, on a free port."""
    port = free_port()
    env = {**os.environ, **runtime.ui_env(platform.settings, runtime.create_service_token(platform.settings))}
    log = (tmp_path_factory.mktemp("ui") / "ui.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "ui" / "app.py"),
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--server.headless=true",
            "--browser.gatherUsageStats=false",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited with {process.returncode}; see {log.name}")
        try:
            return httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, UI_START_DEADLINE_S, "the web UI to answer /_stcore/health", interval_s=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture
def browser_page(tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run 'make browser-deps' (it installs Debian's chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # A fresh profile per test: Playwright takes it as user_data_dir (it refuses a --user-data-dir flag).
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
            viewport={"width": 1400, "height": 2400},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_sign_in_create_model_upload_zip_see_gallery_and_chart(
    platform: Platform, ui_url: str, browser_page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_TIMEOUT_MS)
    page = browser_page
    created = platform.http.post("/v1/auth/register", json={"username": "bea", "password": PASSWORD})
    assert created.status_code == 201, created.text

    page.goto(ui_url)
    sign_in = page.locator('[data-testid="stForm"]').first
    expect(sign_in.get_by_text("Sign in").first).to_be_visible()
    shot(page, "01-sign-in")
    sign_in.get_by_role("textbox", name="Username").fill("bea")
    sign_in.get_by_role("textbox", name="Password").fill(PASSWORD)
    sign_in.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    # Without models yet, the page opens on the "New model" tab.
    expect(page.get_by_role("tab", name="New model")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_text("How long may one training take at most?")).to_be_visible()
    shot(page, "02-models-empty")

    page.get_by_role("textbox", name="Name").fill("Pets")
    page.get_by_role("button", name="Create model").click()
    expect(page.get_by_role("heading", name="Pets")).to_be_visible()
    expect(page.get_by_text("Either of these layouts works")).to_be_visible()
    shot(page, "03-model-empty")

    zip_path = make_zip(tmp_path / "pets.zip", {"cat": 7, "dog": 5}, size=(48, 32))
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(zip_path))
    expect(page.get_by_text("pets.zip")).to_be_visible()
    page.get_by_role("button", name="Import", exact=True).click()

    expect(page.get_by_text("Added 12 pictures in 2 classes.").first).to_be_visible()
    expect(page.locator('[data-testid="stVegaLiteChart"]').first).to_be_visible()
    thumbnails = page.locator('[data-testid="stImage"] img')
    expect(thumbnails).to_have_count(7)  # the cats, the first class
    shot(page, "04-model-data")

    page.get_by_text("Review one by one").click()
    expect(page.get_by_text("Picture 1 of 7 in 'cat'")).to_be_visible()
    expect(page.get_by_role("button", name="Keep")).to_be_enabled()
    # The click left focus on the switch; Streamlit ignores shortcuts typed into a form control.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("k")  # keep, by keyboard
    expect(page.get_by_text("Picture 2 of 7 in 'cat'")).to_be_visible()
    shot(page, "05-review")

    page.get_by_role("link", name="Your models").click()
    expect(page.get_by_text("2 classes · 12 pictures")).to_be_visible()
    shot(page, "06-models")

    assert "classifly_session" in {cookie["name"] for cookie in page.context.cookies()}
    page.reload()  # a new browser session: signed in again by the signed cookie
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("heading", name="Pets", level=1)).to_be_visible()
    page.get_by_role("tab", name="API").click()
    expect(page.get_by_text("This model's id is")).to_be_visible()
    shot(page, "07-model-api")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    shot(page, "08-signed-out")
    assert "classifly_session" not in {cookie["name"] for cookie in page.context.cookies()}
