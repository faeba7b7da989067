"""The admin page: a link to the Ray dashboard for administrators, an honest note, nothing for others."""

from __future__ import annotations

import pytest

from tests.ui.conftest import FakeApi, assert_no_exception, signed_in_app, texts


def test_admins_get_the_dashboard_link(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFLY_DASHBOARD_URL", "http://127.0.0.1:8265")
    app = signed_in_app("views/admin.py", admin=True)
    app.run()

    assert_no_exception(app)
    assert app.title[0].value == "Cluster"
    assert [b.proto.url for b in app.get("link_button")] == ["http://127.0.0.1:8265"]
    assert "Cluster views arrive in a coming version" in texts(app)
    assert api.calls == []


def test_other_users_never_reach_it(api: FakeApi) -> None:
    api.returns("list_models", [])
    app = signed_in_app("views/admin.py")
    app.run()

    assert_no_exception(app)
    assert app.title[0].value == "Models"  # the page is not in their navigation: they land on the default page
    assert "Open the Ray dashboard" not in texts(app)
