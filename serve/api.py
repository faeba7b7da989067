"""The FastAPI application of the REST API, built from services so tests and Serve replicas share it."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.services import Services
from serve.cache import ServingCache
from serve.classifier import Classifier
from serve.limits import Limits
from serve.problems import install_problem_handlers, problem_response
from serve.routes import admin, auth, classify, datasets, health, images, models, service, tasks, tokens, training
from serve.task_buffer import TaskBuffer

API_DESCRIPTION = """
Turn folders of labelled pictures into image classifiers.

1. `POST /v1/auth/register`, then `POST /v1/auth/login` → a session token; or create a long-lived
   API token with `POST /v1/tokens`. Send it as `Authorization: Bearer <token>`.
2. `POST /v1/models` → a model; `POST /v1/models/{id}/imports` with a zip of class folders.
3. Follow the job at `GET /v1/jobs/{job_id}`; read the report and `GET /v1/models/{id}/dataset`.
4. `POST /v1/models/{id}/train`, then `POST /v1/models/{id}/classify` with picture files; every answer is a
   task (`GET /v1/tasks`) you can confirm or correct (`POST /v1/tasks/{task_id}/feedback`).

Errors are `application/problem+json` with a `code` and a `detail` that says what to do.
"""


class BodySizeLimit:
    """Refuse request bodies over the upload limit: a declared Content-Length before reading any of it, and a body
    sent without one (chunked) as soon as what has arrived passes the limit (a 413 from inside the route)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = problem_response(
                413,
                "too_large",
                "Upload too large",
                f"This request is {int(declared) / 2**20:,.0f} MB; the limit is {self.limit / 2**20:,.0f} MB.",
                scope["path"],
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises an HTTPException met while reading a body; problems.http_error words it.
                    raise StarletteHTTPException(413)
            return message

        await self.app(scope, counted, send)


def create_api(services: Services, classifier: Classifier | None = None) -> FastAPI:
    """The whole /v1 API over the given services; without a classifier, classify routes answer 503."""
    task_buffer = TaskBuffer(services.catalog)
    cache = ServingCache(services.catalog, ttl_s=services.settings.api_cache_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await task_buffer.close()  # Serve runs this when the replica stops: waiting tasks are stored first

    app = FastAPI(
        title="Classifly API",
        version="1.0",
        description=API_DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.task_buffer = task_buffer
    app.state.cache = cache
    app.state.classifier = classifier
    app.state.limits = Limits.from_settings(services.settings)
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, limit=services.settings.max_upload_bytes)
    for module in (health, auth, tokens, models, images, datasets, training, classify, tasks, service):
        app.include_router(module.router, prefix="/v1")
    app.include_router(datasets.jobs_router, prefix="/v1")
    app.include_router(tasks.stats_router, prefix="/v1")
    app.include_router(admin.router, prefix="/v1")
    return app
