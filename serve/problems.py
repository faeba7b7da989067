"""The only place errors become HTTP: ClassiflyError → application/problem+json; anything else → opaque 500."""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import ClassiflyError

logger = logging.getLogger("classifly.api")
PROBLEM_TYPE = "https://classifly.dev/problems/"


def problem_body(status: int, code: str, title: str, detail: str, instance: str, **extra: object) -> dict[str, object]:
    """An RFC 9457 problem document as a dict."""
    body = {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail, "code": code}
    body["instance"] = instance
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def error_problem(error: ClassiflyError, instance: str) -> dict[str, object]:
    """The problem document of one of our errors: also what a per-item failure inside a 200 answer carries."""
    return problem_body(error.status, error.code, error.title, error.detail, instance, field=error.field, **error.extra)


def problem_response(status: int, code: str, title: str, detail: str, instance: str, **extra: object) -> JSONResponse:
    """An RFC 9457 problem document."""
    body = problem_body(status, code, title, detail, instance, **extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 429 and isinstance(extra.get("retry_after"), int):
        headers = {"Retry-After": str(extra["retry_after"])}  # seconds; the body carries the same number
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


async def classifly_error(request: Request, error: ClassiflyError) -> JSONResponse:
    return problem_response(
        error.status,
        error.code,
        error.title,
        error.detail,
        request.url.path,
        field=error.field,
        **error.extra,
    )


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "field": ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")),
            "message": item.get("msg", ""),
        }
        for item in error.errors()
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    detail = f"'{first['field']}': {first['message']}" if first["field"] else first["message"]
    return problem_response(
        422, "invalid_input", "The request could not be used", detail, request.url.path, errors=errors
    )


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "too_large"}
    title = {404: "Not found", 405: "Method not allowed", 413: "Upload too large"}.get(
        error.status_code, "Request failed"
    )
    detail = str(error.detail) if error.status_code != 404 else f"There is nothing at {request.url.path}."
    if error.status_code == 413:  # the body limit, counted while reading a body sent without Content-Length
        detail = "This request is larger than the server accepts. Send less at once: split the zip into several."
    return problem_response(
        error.status_code, codes.get(error.status_code, "http_error"), title, detail, request.url.path
    )


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    error_id = secrets.token_hex(6)
    logger.exception("unexpected error %s on %s %s", error_id, request.method, request.url.path)
    return problem_response(
        500,
        "internal",
        "Internal error",
        f"Something went wrong on the server (error id {error_id}). Nothing was changed; try again, and tell"
        " the operator this id if it keeps happening.",
        request.url.path,
        error_id=error_id,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through problem+json; tracebacks stay in the server log."""
    app.add_exception_handler(ClassiflyError, classifly_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
