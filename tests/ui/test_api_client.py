"""The UI's HTTP client: answers become typed values, every failure an ApiError in plain words (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from ui import api_client
from ui.api_client import ApiError
from ui.api_types import TrainOptions

BASE = "http://api.test:8000"


@pytest.fixture
def serve_with(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Callable[[httpx.Request], httpx.Response]], None]]:
    """Answer the client's requests with a handler instead of a server."""
    monkeypatch.setenv("CLASSIFLY_API_URL", BASE)

    def install(handler: Callable[[httpx.Request], httpx.Response]) -> None:
        monkeypatch.setattr(api_client, "_client", httpx.Client(base_url=BASE, transport=httpx.MockTransport(handler)))

    yield install


def test_answers_are_typed_and_the_token_is_sent(serve_with) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"data": [{"name": "cat", "train_images": 4, "test_images": 1, "total_images": 5, "extra": 1}]}
        return httpx.Response(200, json={**body, "count": 1})

    serve_with(handler)
    classes = api_client.list_classes("cfs_abc", "mdl_1")

    assert [(c.name, c.total_images) for c in classes] == [("cat", 5)]
    assert seen[0].url.path == "/v1/models/mdl_1/classes"
    assert seen[0].headers["Authorization"] == "Bearer cfs_abc"


def test_class_names_are_escaped_in_paths(serve_with) -> None:
    paths: list[str] = []
    serve_with(lambda request: paths.append(request.url.raw_path.decode()) or httpx.Response(204))

    api_client.delete_class("cfs_abc", "mdl_1", "red roses/2")

    assert paths == ["/v1/models/mdl_1/classes/red%20roses%2F2"]


def test_a_problem_keeps_title_detail_code_and_status(serve_with) -> None:
    problem = {"title": "Not found", "detail": "There is no model 'mdl_x'.", "code": "not_found", "status": 404}
    serve_with(lambda request: httpx.Response(404, json=problem, headers={"content-type": "application/problem+json"}))

    with pytest.raises(ApiError) as caught:
        api_client.get_model("cfs_abc", "mdl_x")

    assert caught.value.problem.model_dump() == problem


def test_a_validation_error_lists_what_is_wrong(serve_with) -> None:
    body = {"title": "Invalid input", "code": "invalid_input", "detail": [{"msg": "name is too long"}, {"msg": "x"}]}
    serve_with(lambda request: httpx.Response(422, json=body))

    with pytest.raises(ApiError) as caught:
        api_client.create_model("cfs_abc", "n" * 300, "", None, 600)

    assert caught.value.problem.detail == "name is too long; x"


def test_a_non_json_error_still_reads_as_a_sentence(serve_with) -> None:
    serve_with(lambda request: httpx.Response(502, text="<html>Bad gateway</html>"))

    with pytest.raises(ApiError) as caught:
        api_client.list_models("cfs_abc")

    assert caught.value.problem.status == 502
    assert "<html>" not in caught.value.problem.title + caught.value.problem.detail


def test_an_unreachable_api_says_what_to_do(serve_with) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    serve_with(refuse)

    with pytest.raises(ApiError) as caught:
        api_client.list_models("cfs_abc")

    assert caught.value.problem.title == "The Classifly API does not answer"
    assert "make run" in caught.value.problem.detail
    assert api_client.health() is False


def test_service_calls_need_the_service_token(serve_with, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLASSIFLY_SERVICE_TOKEN", raising=False)
    serve_with(lambda request: pytest.fail("no request may leave without the service token"))

    with pytest.raises(ApiError) as caught:
        api_client.sign_in_accounts()

    assert caught.value.problem.title == "Sign-in is not available"


def test_service_calls_send_the_service_token(serve_with, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSIFLY_SERVICE_TOKEN", "cfx_service")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [{"username": "alice", "password_hash": "$2b$..."}], "count": 1})

    serve_with(handler)
    accounts = api_client.sign_in_accounts()

    assert [a.username for a in accounts] == ["alice"]
    assert seen[0].headers["Authorization"] == "Bearer cfx_service"


def test_training_sends_only_the_chosen_options(serve_with) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"id": "run_1", "model_id": "mdl_1", "status": "queued", "created_at": "2026-05-01T12:00:00Z"}
        return httpx.Response(202, json={**body, "progress": {"stage": "queued", "fraction": 0.0, "message": ""}})

    serve_with(handler)
    run = api_client.start_training("cfs_abc", "mdl_1", TrainOptions(max_epochs=5, augmentation=False))

    assert run.active and run.progress.stage == "queued"
    assert seen[0].url.path == "/v1/models/mdl_1/train"
    assert json.loads(seen[0].content) == {"max_epochs": 5, "augmentation": False}


def test_an_export_is_bytes_and_a_refused_one_says_why(serve_with) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["format"] == "keras":
            return httpx.Response(200, content=b"PK keras")
        problem = {"title": "Not found", "detail": "Version 1 has no stored network to export.", "status": 404}
        return httpx.Response(404, json=problem, headers={"content-type": "application/problem+json"})

    serve_with(handler)

    assert api_client.export_version("cfs_abc", "mdl_1", 1, "keras") == b"PK keras"
    with pytest.raises(ApiError) as caught:
        api_client.export_version("cfs_abc", "mdl_1", 1, "tflite")
    assert caught.value.problem.detail == "Version 1 has no stored network to export."


def test_uploads_and_class_deletions_return_the_model_update_they_started(serve_with) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Model-Update": "/v1/jobs/job_42"} if "trained" in request.url.path else {}
        if request.method == "DELETE":
            return httpx.Response(204, headers=headers)
        body = {"accepted": 1, "duplicates": 0, "rejected": 0, "results": []}
        return httpx.Response(201, json=body, headers=headers)

    serve_with(handler)

    assert api_client.upload_images("cfs_abc", "trained", "cat", [("a.png", b"x")]).update_job_id == "job_42"
    assert api_client.upload_images("cfs_abc", "new", "cat", [("a.png", b"x")]).update_job_id is None
    assert api_client.delete_class("cfs_abc", "trained", "cat") == "job_42"
    assert api_client.delete_class("cfs_abc", "new", "cat") is None


def test_classify_sends_the_files_and_only_the_chosen_options(serve_with) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        problem = {"type": "about:blank", "title": "Invalid input", "detail": "Not a picture.", "status": 422}
        results = [
            {"name": "a.png", "task_id": "tsk_1", "version": 2, "label": "cat", "confidence": 0.9, "uncertain": False,
             "top": [{"label": "cat", "probability": 0.9}], "error": None},
            {"name": "b.png", "error": problem},
        ]  # fmt: skip
        body = {"model_id": "mdl_1", "version": 2, "classified": 1, "failed": 1, "uncertain_below": 0.5}
        return httpx.Response(200, json={**body, "latency_ms": 3.0, "results": results})

    serve_with(handler)
    answer = api_client.classify("cfs_abc", "mdl_1", [("a.png", b"x"), ("b.png", b"y")], top_k=2)

    assert dict(seen[0].url.params) == {"top_k": "2"}
    assert seen[0].content.count(b'name="files"') == 2
    assert [r.label for r in answer.results] == ["cat", None]
    assert answer.results[1].error.detail == "Not a picture."


def test_tasks_filters_and_feedback_bodies(serve_with) -> None:
    seen: list[httpx.Request] = []
    task = {"id": "tsk_1", "model_id": "mdl_1", "version": 2, "label": "cat", "confidence": 0.9,
            "created_at": "2026-05-01T12:00:00Z", "feedback": {"correct": False, "label": "dog"}}  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/tasks":
            return httpx.Response(200, json={"data": [task], "count": 1})
        return httpx.Response(200, json=task)

    serve_with(handler)
    page = api_client.list_tasks("cfs_abc", "mdl_1", feedback="none", offset=20)
    corrected = api_client.give_feedback("cfs_abc", "tsk_1", label="dog")
    api_client.give_feedback("cfs_abc", "tsk_1", correct=True)

    assert dict(seen[0].url.params) == {"model_id": "mdl_1", "feedback": "none", "limit": "20", "offset": "20"}
    assert page.count == 1 and page.data[0].label == "cat"
    assert seen[1].url.path == "/v1/tasks/tsk_1/feedback"
    assert [json.loads(r.content) for r in seen[1:]] == [{"label": "dog"}, {"correct": True}]
    assert corrected.feedback is not None and corrected.feedback.label == "dog"
