"""The account page: storage against the quota, the balanced clean-up (propose, then apply), sign out."""

from __future__ import annotations

from tests.ui.conftest import TOKEN, FakeApi, assert_no_exception, signed_in_app, texts
from ui import state
from ui.api_types import Cleanup, ModelUsage, Storage

PAGE = "views/account.py"
MiB = 2**20
PLAN = Cleanup(
    needed_bytes=30 * MiB,
    freed_bytes=31 * MiB,
    share_removed=0.25,
    images=40,
    per_class=[
        {"model_id": "mdl_1", "class": "cat", "before": 80, "removed": 20},
        {"model_id": "mdl_1", "class": "dog", "before": 80, "removed": 20},
    ],
    sufficient=True,
    applied=False,
)


def storage(used: int, quota: int = 100 * MiB) -> Storage:
    return Storage(
        used_bytes=used,
        quota_bytes=quota,
        over_quota=used > quota,
        models=[ModelUsage(model_id="mdl_1", name="Pets", images=160, bytes=used)],
    )


def test_usage_against_the_quota(api: FakeApi) -> None:
    api.returns("storage", storage(25 * MiB))
    app = signed_in_app(PAGE)
    app.run()

    assert_no_exception(app)
    assert [bar.proto.text for bar in app.get("progress")] == ["25.0 MB of 100.0 MB used (25%)"]
    assert "Signed in as **alice**." in texts(app)
    assert app.error == [] or len(app.error) == 0


def test_over_quota_says_what_to_do(api: FakeApi) -> None:
    api.returns("storage", storage(120 * MiB))
    app = signed_in_app(PAGE)
    app.run()

    assert any("over your storage quota" in e.value for e in app.error)


def test_cleanup_is_proposed_first_then_applied(api: FakeApi) -> None:
    api.returns("storage", storage(120 * MiB))
    api.returns("propose_cleanup", PLAN)
    api.returns("apply_cleanup", PLAN.model_copy(update={"applied": True}))
    app = signed_in_app(PAGE)
    app.run()

    app.number_input[0].set_value(30)
    app.button(key="cleanup.propose").click().run()

    assert api.called("propose_cleanup") == [((TOKEN, 30 * MiB), {})]
    assert api.called("apply_cleanup") == []
    assert "Delete **40 pictures** (25% of each class), freeing 31.0 MB." in texts(app)
    assert list(app.dataframe[0].value["to delete"]) == [20, 20]

    app.button(key="cleanup.apply").click().run()

    assert api.called("apply_cleanup") == [((TOKEN, 30 * MiB), {})]
    assert "Deleted 40 pictures, freeing 31.0 MB." in [s.value for s in app.success]
    assert state.CLEANUP_PLAN not in app.session_state


def test_sign_out_from_the_account_page(api: FakeApi) -> None:
    api.returns("storage", storage(0))
    api.returns("logout", None)
    api.returns("sign_in_accounts", [])
    app = signed_in_app(PAGE)
    app.run()

    app.button(key="account.sign_out").click().run()

    assert_no_exception(app)
    assert api.called("logout") == [((TOKEN,), {})]
    assert [t.label for t in app.tabs] == ["Sign in", "Create an account"]
