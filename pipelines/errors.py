"""The one error hierarchy of Classifly: pure, importable from every layer, picklable across Ray.

Messages say what happened and what to do about it, in words a non-expert understands.
`serve/problems.py` is the only place that turns these into HTTP responses.
"""

from __future__ import annotations

from typing import Any


class ClassiflyError(Exception):
    """Base of every error the platform reports to a user on purpose."""

    code = "error"
    status = 500
    title = "Something went wrong"

    def __init__(self, detail: str, *, field: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = dict(extra or {})

    def __reduce__(self):
        # Ray pickles exceptions between processes; keyword-only arguments would be lost otherwise.
        return (_rebuild, (type(self), self.detail, self.field, self.extra))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


def _rebuild(cls: type[ClassiflyError], detail: str, field: str | None, extra: dict[str, Any]):
    return cls(detail, field=field, extra=extra)


class InvalidInput(ClassiflyError, ValueError):
    code = "invalid_input"
    status = 422
    title = "The request could not be used"


class NotFound(ClassiflyError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(ClassiflyError):
    code = "conflict"
    status = 409
    title = "Conflict"


class NotReady(ClassiflyError):
    code = "not_ready"
    status = 409
    title = "Not ready yet"


class QuotaExceeded(ClassiflyError):
    code = "quota_exceeded"
    status = 413
    title = "Storage quota exceeded"


class TooLarge(ClassiflyError):
    code = "too_large"
    status = 413
    title = "Upload too large"


class RateLimited(ClassiflyError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class Unauthorized(ClassiflyError):
    code = "unauthorized"
    status = 401
    title = "Sign-in required"


class Forbidden(ClassiflyError):
    code = "forbidden"
    status = 403
    title = "Not allowed"


class Unavailable(ClassiflyError):
    code = "unavailable"
    status = 503
    title = "Temporarily unavailable"


ERRORS: tuple[type[ClassiflyError], ...] = (
    ClassiflyError,
    InvalidInput,
    NotFound,
    Conflict,
    NotReady,
    QuotaExceeded,
    TooLarge,
    RateLimited,
    Unauthorized,
    Forbidden,
    Unavailable,
)
