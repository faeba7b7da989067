"""The only module of the web UI that speaks HTTP: one typed function per REST API endpoint.

Every failure becomes `ApiError(problem)`, carrying the API's problem+json (title, detail, code, status) or a
plain-words problem for network failures, so pages show a sentence and what to do, never a traceback.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import IO, Any
from urllib.parse import quote

import httpx

from ui.api_types import (
    Classification,
    ClassInfo,
    Cleanup,
    ClusterView,
    DatasetStats,
    Image,
    ImagesPage,
    Job,
    Me,
    Model,
    ModelStats,
    Problem,
    Run,
    RunDetail,
    Session,
    SignInAccount,
    Storage,
    Task,
    TasksPage,
    Token,
    TokenCreated,
    TrainOptions,
    UploadResult,
    User,
    Version,
    job_id_of,
)

DEFAULT_API_URL = "http://127.0.0.1:8000"
MODEL_UPDATE_HEADER = "Model-Update"  # on uploads and class deletions of a trained model: the update job's URL
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
UPLOAD_TIMEOUT = httpx.Timeout(3600.0, connect=5.0)  # a multi-gigabyte zip over a slow link
EXPORT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)  # the API converts the model (TensorFlow Lite) before answering
CLASSIFY_TIMEOUT = httpx.Timeout(120.0, connect=5.0)  # a version's first request loads it

_client: httpx.Client | None = None


class ApiError(Exception):
    """The API refused a request or could not be reached; `problem` says why in plain words."""

    def __init__(self, problem: Problem):
        super().__init__(f"{problem.title}: {problem.detail}")
        self.problem = problem


def api_url() -> str:
    """Where the UI reaches the API (also the URL shown in code examples)."""
    return os.environ.get("CLASSIFLY_API_URL", DEFAULT_API_URL).rstrip("/")


def _http() -> httpx.Client:
    global _client
    if _client is None or str(_client.base_url).rstrip("/") != api_url():
        _client = httpx.Client(base_url=api_url(), timeout=TIMEOUT)
    return _client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _request(method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {}) | (_auth(token) if token else {})
    try:
        response = _http().request(method, path, headers=headers, **kwargs)
    except httpx.TimeoutException:
        raise ApiError(
            Problem(
                title="The Classifly API took too long to answer",
                detail="It may be busy. Wait a moment and try again.",
                code="timeout",
            )
        ) from None
    except httpx.HTTPError:
        raise ApiError(
            Problem(
                title="The Classifly API does not answer",
                detail=f"Nothing answers at {api_url()}. Start the platform with 'make run', then reload this page.",
                code="unreachable",
            )
        ) from None
    if response.status_code >= 400:
        raise ApiError(_problem_of(response))
    return response


def _problem_of(response: httpx.Response) -> Problem:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail")
    if isinstance(detail, list):  # a validation error: a list of fields
        detail = "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict)) or None
    return Problem(
        title=str(body.get("title") or f"The API answered {response.status_code}"),
        detail=str(detail or "Try again; if it keeps happening, tell the person who runs this server."),
        code=str(body.get("code") or "error"),
        status=response.status_code,
    )


# --- sign-in (service token: only the UI process has it) -----------------------------------------------------


def _service_token() -> str:
    token = os.environ.get("CLASSIFLY_SERVICE_TOKEN", "")
    if not token:
        raise ApiError(
            Problem(
                title="Sign-in is not available",
                detail="The web UI was started without its service credential. Start it with 'classifly up'.",
                code="no_service_token",
            )
        )
    return token


def sign_in_accounts() -> list[SignInAccount]:
    """Usernames and bcrypt hashes for the login form, read fresh so new accounts can sign in at once."""
    body = _request("GET", "/v1/service/accounts", _service_token()).json()
    return [SignInAccount.model_validate(item) for item in body["data"]]


def session_for(username: str) -> Session:
    """A session token for a user whose password (or signed cookie) the UI has verified."""
    response = _request("POST", "/v1/service/sessions", _service_token(), json={"username": username})
    return Session.model_validate(response.json())


# --- accounts -------------------------------------------------------------------------------------------------


def health() -> bool:
    """Whether the API answers and reaches its catalog."""
    try:
        return _request("GET", "/v1/health").status_code == 200
    except ApiError:
        return False


def register(username: str, password: str) -> User:
    response = _request("POST", "/v1/auth/register", json={"username": username, "password": password})
    return User.model_validate(response.json())


def logout(token: str) -> None:
    _request("POST", "/v1/auth/logout", token)


def me(token: str) -> Me:
    return Me.model_validate(_request("GET", "/v1/me", token).json())


def storage(token: str) -> Storage:
    return Storage.model_validate(_request("GET", "/v1/me/storage", token).json())


def propose_cleanup(token: str, free_bytes: int | None = None) -> Cleanup:
    params = {"free_bytes": free_bytes} if free_bytes else {}
    return Cleanup.model_validate(_request("GET", "/v1/me/storage/cleanup", token, params=params).json())


def apply_cleanup(token: str, free_bytes: int | None = None) -> Cleanup:
    response = _request("POST", "/v1/me/storage/cleanup", token, json={"free_bytes": free_bytes})
    return Cleanup.model_validate(response.json())


# --- API tokens -----------------------------------------------------------------------------------------------


def create_token(token: str, name: str, expires_in_days: int | None) -> TokenCreated:
    response = _request("POST", "/v1/tokens", token, json={"name": name, "expires_in_days": expires_in_days})
    return TokenCreated.model_validate(response.json())


def list_tokens(token: str) -> list[Token]:
    return [Token.model_validate(item) for item in _request("GET", "/v1/tokens", token).json()["data"]]


def revoke_token(token: str, token_id: str) -> Token:
    return Token.model_validate(_request("DELETE", f"/v1/tokens/{token_id}", token).json())


# --- models and classes ---------------------------------------------------------------------------------------


def list_models(token: str) -> list[Model]:
    body = _request("GET", "/v1/models", token, params={"limit": 500}).json()
    return [Model.model_validate(item) for item in body["data"]]


def create_model(token: str, name: str, description: str, target_accuracy: float | None, time_budget_s: int) -> Model:
    body = {
        "name": name,
        "description": description,
        "target_accuracy": target_accuracy,
        "time_budget_s": time_budget_s,
    }
    return Model.model_validate(_request("POST", "/v1/models", token, json=body).json())


def get_model(token: str, model_id: str) -> Model:
    return Model.model_validate(_request("GET", f"/v1/models/{model_id}", token).json())


def update_model(token: str, model_id: str, **changes: Any) -> Model:
    return Model.model_validate(_request("PATCH", f"/v1/models/{model_id}", token, json=changes).json())


def delete_model(token: str, model_id: str) -> None:
    _request("DELETE", f"/v1/models/{model_id}", token)


def set_sample_image(token: str, model_id: str, name: str, data: bytes) -> Model:
    response = _request("PUT", f"/v1/models/{model_id}/sample", token, files={"file": (name, data)})
    return Model.model_validate(response.json())


def sample_image(token: str, model_id: str) -> bytes:
    return _request("GET", f"/v1/models/{model_id}/sample", token).content


def list_classes(token: str, model_id: str) -> list[ClassInfo]:
    body = _request("GET", f"/v1/models/{model_id}/classes", token).json()
    return [ClassInfo.model_validate(item) for item in body["data"]]


def create_class(token: str, model_id: str, name: str) -> ClassInfo:
    response = _request("POST", f"/v1/models/{model_id}/classes", token, json={"name": name})
    return ClassInfo.model_validate(response.json())


def rename_class(token: str, model_id: str, name: str, new_name: str) -> ClassInfo:
    response = _request("PATCH", _class_path(model_id, name), token, json={"name": new_name})
    return ClassInfo.model_validate(response.json())


def delete_class(token: str, model_id: str, name: str) -> str | None:
    """Delete a class and its pictures; on a trained model, the id of the update (job) that removes it."""
    return _update_job_id(_request("DELETE", _class_path(model_id, name), token))


def _class_path(model_id: str, name: str) -> str:
    return f"/v1/models/{model_id}/classes/{quote(name, safe='')}"


# --- pictures -------------------------------------------------------------------------------------------------


def upload_images(token: str, model_id: str, label: str, files: list[tuple[str, bytes]]) -> UploadResult:
    """Add pictures to a class; on a trained model, `update_job_id` is the update (job) they started."""
    response = _request(
        "POST",
        f"/v1/models/{model_id}/images",
        token,
        data={"label": label},
        files=[("files", (name, data)) for name, data in files],
        timeout=UPLOAD_TIMEOUT,
    )
    return UploadResult.model_validate({**response.json(), "update_job_id": _update_job_id(response)})


def _update_job_id(response: httpx.Response) -> str | None:
    """The job id in a `Model-Update: /v1/jobs/{id}` header, if the answer has one."""
    return job_id_of(response.headers.get(MODEL_UPDATE_HEADER))


def list_images(
    token: str,
    model_id: str,
    *,
    label: str | None = None,
    status: str = "accepted",
    limit: int = 50,
    offset: int = 0,
) -> ImagesPage:
    params: dict[str, Any] = {"status": status, "limit": limit, "offset": offset}
    if label:
        params["label"] = label
    return ImagesPage.model_validate(_request("GET", f"/v1/models/{model_id}/images", token, params=params).json())


def image_content(token: str, model_id: str, image_id: int) -> bytes:
    return _request("GET", f"/v1/models/{model_id}/images/{image_id}/content", token).content


def thumbnail(token: str, model_id: str, image_id: int, size: int = 128) -> bytes:
    path = f"/v1/models/{model_id}/images/{image_id}/thumbnail"
    return _request("GET", path, token, params={"size": size}).content


def move_image(token: str, model_id: str, image_id: int, label: str) -> Image:
    response = _request("PATCH", f"/v1/models/{model_id}/images/{image_id}", token, json={"label": label})
    return Image.model_validate(response.json())


def delete_images(token: str, model_id: str, image_ids: list[int]) -> None:
    _request("POST", f"/v1/models/{model_id}/images/delete", token, json={"ids": image_ids})


# --- imports, jobs, statistics --------------------------------------------------------------------------------


def start_import(token: str, model_id: str, name: str, file: IO[bytes] | bytes) -> Job:
    response = _request(
        "POST",
        f"/v1/models/{model_id}/imports",
        token,
        files={"file": (name, file, "application/zip")},
        timeout=UPLOAD_TIMEOUT,
    )
    return Job.model_validate(response.json())


def list_imports(token: str, model_id: str) -> list[Job]:
    body = _request("GET", f"/v1/models/{model_id}/imports", token).json()
    return [Job.model_validate(item) for item in body["data"]]


def get_job(token: str, job_id: str) -> Job:
    return Job.model_validate(_request("GET", f"/v1/jobs/{job_id}", token).json())


def dataset_stats(token: str, model_id: str) -> DatasetStats:
    return DatasetStats.model_validate(_request("GET", f"/v1/models/{model_id}/dataset", token).json())


# --- training runs and versions -------------------------------------------------------------------------------


def start_training(token: str, model_id: str, options: TrainOptions | None = None) -> Run:
    """Start a training run; without options the platform decides everything within the model's goal and budget."""
    body = options.model_dump(exclude_none=True) if options else {}
    return Run.model_validate(_request("POST", f"/v1/models/{model_id}/train", token, json=body).json())


def list_runs(token: str, model_id: str) -> list[Run]:
    body = _request("GET", f"/v1/models/{model_id}/runs", token).json()
    return [Run.model_validate(item) for item in body["data"]]


def get_run(token: str, run_id: str) -> RunDetail:
    return RunDetail.model_validate(_request("GET", f"/v1/runs/{run_id}", token).json())


def cancel_run(token: str, run_id: str) -> Run:
    return Run.model_validate(_request("POST", f"/v1/runs/{run_id}/cancel", token).json())


def resume_run(token: str, run_id: str) -> Run:
    return Run.model_validate(_request("POST", f"/v1/runs/{run_id}/resume", token).json())


def list_versions(token: str, model_id: str) -> list[Version]:
    body = _request("GET", f"/v1/models/{model_id}/versions", token).json()
    return [Version.model_validate(item) for item in body["data"]]


def get_version(token: str, model_id: str, version: int) -> Version:
    return Version.model_validate(_request("GET", f"/v1/models/{model_id}/versions/{version}", token).json())


def activate_version(token: str, model_id: str, version: int) -> Version:
    response = _request("POST", f"/v1/models/{model_id}/versions/{version}/activate", token)
    return Version.model_validate(response.json())


def export_version(token: str, model_id: str, version: int, fmt: str) -> bytes:
    """A version as a file to download: fmt "keras" (a .keras model) or "tflite" (TensorFlow Lite)."""
    path = f"/v1/models/{model_id}/versions/{version}/export"
    return _request("GET", path, token, params={"format": fmt}, timeout=EXPORT_TIMEOUT).content


# --- model updates (classes added or removed without training) ----------------------------------------------


def update_model_now(token: str, model_id: str) -> Job:
    """Bring the answering version up to date with the pictures as they are now (after moves or deletions)."""
    return Job.model_validate(_request("POST", f"/v1/models/{model_id}/update", token).json())


def list_updates(token: str, model_id: str) -> list[Job]:
    """The model's updates, newest first (their `result` reads as `ui.api_types.UpdateResult`)."""
    body = _request("GET", f"/v1/models/{model_id}/updates", token).json()
    return [Job.model_validate(item) for item in body["data"]]


# --- classification, tasks, feedback, statistics ---------------------------------------------------------------


def classify(
    token: str,
    model_id: str,
    files: list[tuple[str, bytes]],
    *,
    top_k: int = 3,
    version: int | None = None,
    uncertain_below: float | None = None,
) -> Classification:
    """Classify pictures with the answering version (or `version`); one answer or problem per file."""
    params: dict[str, Any] = {"top_k": top_k}
    if version is not None:
        params["version"] = version
    if uncertain_below is not None:
        params["uncertain_below"] = uncertain_below
    response = _request(
        "POST",
        f"/v1/models/{model_id}/classify",
        token,
        params=params,
        files=[("files", (name, data)) for name, data in files],
        timeout=CLASSIFY_TIMEOUT,
    )
    return Classification.model_validate(response.json())


def list_tasks(
    token: str,
    model_id: str,
    *,
    version: int | None = None,
    feedback: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 20,
    offset: int = 0,
) -> TasksPage:
    """A model's classified pictures, newest first; feedback: "none", "given", "confirmed" or "corrected"."""
    params: dict[str, Any] = {"model_id": model_id, "limit": limit, "offset": offset}
    optional = {"version": version, "feedback": feedback, "since": since, "until": until}
    params |= {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in optional.items()
        if value is not None
    }
    return TasksPage.model_validate(_request("GET", "/v1/tasks", token, params=params).json())


def get_task(token: str, task_id: str) -> Task:
    return Task.model_validate(_request("GET", f"/v1/tasks/{task_id}", token).json())


def give_feedback(token: str, task_id: str, *, correct: bool | None = None, label: str | None = None) -> Task:
    """Confirm an answer (correct=True) or give the right class (label=...); later feedback replaces it."""
    body = {name: value for name, value in {"correct": correct, "label": label}.items() if value is not None}
    return Task.model_validate(_request("POST", f"/v1/tasks/{task_id}/feedback", token, json=body).json())


def model_stats(token: str, model_id: str, days: int = 30) -> ModelStats:
    """Traffic, answer times, confidence and accuracy in use (from feedback) over the last `days`."""
    response = _request("GET", f"/v1/models/{model_id}/stats", token, params={"days": days})
    return ModelStats.model_validate(response.json())


def admin_cluster(token: str) -> ClusterView:
    """Administrators only: nodes, resources, runners, queued and running work, Serve replicas."""
    return ClusterView.model_validate(_request("GET", "/v1/admin/cluster", token).json())
