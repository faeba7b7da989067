"""FastAPI dependencies: the services, the current user (bearer token), and ownership-scoped lookups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cluster.catalog.users import TokenRecord, UserRecord
from cluster.security import hash_token
from cluster.services import Services
from pipelines.errors import Forbidden, Unauthorized, Unavailable
from serve.cache import ServingCache
from serve.classifier import Classifier

bearer = HTTPBearer(auto_error=False, description="A session token from /v1/auth/login or an API token.")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_classifier(request: Request) -> Classifier:
    classifier = getattr(request.app.state, "classifier", None)
    if classifier is None:
        raise Unavailable("Classification runs on the platform's serving deployments. Start it with 'classifly up'.")
    return classifier


ClassifierDep = Annotated[Classifier, Depends(get_classifier)]


@dataclass(frozen=True)
class Principal:
    user: UserRecord
    token: TokenRecord

    @property
    def id(self) -> str:
        return self.user.id


def get_cache(request: Request) -> ServingCache:
    return request.app.state.cache


CacheDep = Annotated[ServingCache, Depends(get_cache)]


async def authenticate(
    cache: CacheDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("Send your token as 'Authorization: Bearer <token>'. Get one from POST /v1/auth/login.")
    secret = credentials.credentials.strip()
    if len(secret) > 200 or not secret.isascii():
        raise Unauthorized("This token is not valid. Sign in again or create a new API token.")
    user, token = await cache.user_of_token(hash_token(secret))
    return Principal(user, token)


async def get_principal(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    # The web UI's service token opens the service routes only, never a user's resources.
    if principal.token.kind == "service":
        raise Forbidden("This token belongs to the web UI. Sign in, or use an API token.")
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


async def get_service_caller(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if principal.token.kind != "service":
        raise Forbidden("Only the Classifly web UI may call this route.")
    return principal


ServiceCaller = Annotated[Principal, Depends(get_service_caller)]


async def get_admin(principal: CurrentUser) -> Principal:
    if not principal.user.is_admin:
        raise Forbidden("This needs an administrator account.")
    return principal


AdminUser = Annotated[Principal, Depends(get_admin)]


async def check_upload_rate(request: Request, principal: CurrentUser) -> None:
    """Count an upload request against its token's rate (serve/limits.py); 429 with Retry-After when over."""
    request.app.state.limits.check_upload(principal.token.id)


# For the decorator of every route that stores uploaded bytes: `dependencies=[UploadRate]`.
UploadRate = Depends(check_upload_rate)


def client_address(request: Request) -> str:
    """The caller's address as the server saw it (behind a proxy: the proxy's, unless it forwards the client)."""
    return request.client.host if request.client else "unknown"


def quota_of(services: Services, user: UserRecord) -> int:
    """The user's storage quota: their own if set, the platform default otherwise."""
    return user.quota_bytes if user.quota_bytes is not None else services.settings.quota_bytes
