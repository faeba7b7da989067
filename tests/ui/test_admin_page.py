"""The admin page: the cluster in plain words and the Ray dashboard link for administrators, nothing for others."""

from __future__ import annotations

import pytest

from tests.ui.conftest import FakeApi, assert_no_exception, signed_in_app, texts
from ui.api_types import ClusterView

VIEW = ClusterView.model_validate(
    {
        "ray": "connected",
        "dashboard_url": "http://10.0.0.1:8265",
        "storage": [
            {"username": "alice", "models": 2, "pictures": 900, "used_bytes": 2_500_000_000, "quota_bytes": 5 * 10**9},
            {"username": "bob", "models": 1, "pictures": 3, "used_bytes": 12_000, "quota_bytes": 5 * 10**9},
        ],
        "nodes": [
            {"id": "h" * 40, "address": "10.0.0.1", "alive": True, "kind": "head", "total": {}, "available": {}},
            {"id": "w" * 40, "address": "10.0.0.2", "alive": True, "kind": "worker",
             "total": {"CPU": 4, "classifly_train": 2, "classifly_serve": 2},
             "available": {"CPU": 1.25, "classifly_train": 0, "classifly_serve": 1.25}},
            {"id": "r" * 40, "address": "192.168.1.9", "alive": True, "kind": "runner", "owner": "alice",
             "total": {"runner_usr_alice": 8}, "available": {"runner_usr_alice": 8}},
        ],
        "resources": {"total": {"CPU": 4, "classifly_train": 2, "classifly_serve": 2},
                      "in_use": {"CPU": 2.75, "classifly_train": 2, "classifly_serve": 0.75},
                      "free": {"CPU": 1.25, "classifly_train": 0, "classifly_serve": 1.25}},
        "runners": [{"user_id": "usr_alice", "username": "alice", "nodes": 1, "cpus": 8}],
        "runs": [{"id": "run_1", "status": "running", "owner": "bob", "message": "Trying 4 candidates"}],
        "jobs": [{"id": "job_1", "kind": "import", "status": "queued", "owner": "carol", "message": ""}],
        "serve": [{"app": "classifly", "deployment": "Ingress", "status": "HEALTHY", "replicas": {"RUNNING": 2}}],
    }
)  # fmt: skip


def test_admins_see_the_cluster_in_plain_words(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLASSIFLY_DASHBOARD_URL", raising=False)
    api.returns("admin_cluster", VIEW)
    app = signed_in_app("views/admin.py", admin=True)
    app.run()

    assert_no_exception(app)
    shown = texts(app)
    assert app.title[0].value == "Cluster"
    assert [b.proto.url for b in app.get("link_button")] == ["http://10.0.0.1:8265"]
    assert "3 machines up. CPUs: 2.75 of 4 busy. For training: 2 of 2 busy; for classifying: 0.75 of 2 busy." in shown
    assert "**alice** lends 1 machine with 8 CPUs, used only for their training." in shown
    assert "1 running, 1 waiting." in shown
    machines = app.dataframe[0].value
    assert list(machines["What it is"]) == [
        "Head (runs the platform itself)",
        "Shared machine",
        "alice's own machine (only their training)",
    ]
    assert list(machines["CPUs"])[1:] == ["2.75 of 4 busy", "8 lent"]
    work = app.dataframe[1].value
    assert list(zip(work["What"], work["Whose"], work["State"], strict=True)) == [
        ("Training", "bob", "running"),
        ("Import", "carol", "queued"),
    ]
    assert list(app.dataframe[2].value["Replicas"]) == ["2 running"]
    storage = app.dataframe[3].value
    assert list(zip(storage["Who"], storage["Stored"], storage["Of their quota"], strict=True)) == [
        ("alice", "2,500.0 MB", "50%"),
        ("bob", "12 kB", "0%"),
    ]
    assert [name for name, _, _ in api.calls] == ["admin_cluster"]


def test_the_dashboard_link_stays_when_the_cluster_view_fails(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFLY_DASHBOARD_URL", "http://127.0.0.1:8265")
    api.fails("admin_cluster", "The catalog is restarting", "Try again in a few seconds.", status=503)
    app = signed_in_app("views/admin.py", admin=True)
    app.run()

    assert_no_exception(app)
    assert "The catalog is restarting" in texts(app)
    assert [b.proto.url for b in app.get("link_button")] == ["http://127.0.0.1:8265"]


def test_other_users_never_reach_it(api: FakeApi) -> None:
    api.returns("list_models", [])
    app = signed_in_app("views/admin.py")
    app.run()

    assert_no_exception(app)
    assert app.title[0].value == "Models"  # the page is not in their navigation: they land on the default page
    assert "Open the Ray dashboard" not in texts(app)
    assert not api.called("admin_cluster")
