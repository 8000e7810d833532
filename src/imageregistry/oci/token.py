"""`/v2/token`: the realm of the registry's Bearer challenge (docs/architecture.md#tokens).

`GET` is distribution's token protocol as docker, skopeo and oras use it: the caller's
`Authorization` header (Basic with an htpasswd password or a token as the password, or
Bearer) is exchanged for a token. `POST` is its OAuth2 form (RFC 6749 §4.3 and §6), which
containerd, and so the kubelet, uses whenever it holds credentials:
`grant_type=password` with `username` and `password`, or `grant_type=refresh_token` with
`refresh_token`, plus `service`, `scope`, `client_id` and `access_type`.

Rules both methods share:
- a request that presents credentials is never answered with an anonymous token: wrong
  credentials are `401`, and POST errors carry an RFC 6749 body (`error`,
  `error_description`) beside the OCI `errors` envelope;
- a token given as the password (or as a refresh token) is handed back unchanged; an
  htpasswd login is exchanged for a JWT living `token_ttl_seconds`, so bcrypt runs once.
  That JWT carries `idp: htpasswd`: removing the user from the file revokes it within a
  second (`auth/authn.py`), as a deleted service account revokes its tokens. Failed
  password checks are throttled per source and user (`auth/throttle.py`): `429`;
- tokens are never narrowed to the requested scope: a token stands for an identity and
  every request is authorized on its own, so `scope`, `account` and `access_type` cannot
  widen anything. POST answers `scope` with the part of the request the caller is granted
  now, as the OAuth2 form requires;
- `access_type=offline` (POST) or `offline_token=true` (GET) adds a `refresh_token`
  (`auth/refresh.py`): revocable, stored hashed, tied to what the identity came from.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from imageregistry.auth.authn import Authenticator, TooManyFailedLogins, Unauthenticated
from imageregistry.auth.authorizer import Authorizer, RegistryAction, registry_attributes
from imageregistry.auth.identity import UserInfo
from imageregistry.auth.refresh import RefreshTokens
from imageregistry.auth.tokens import is_refresh_token
from imageregistry.clock import Clock
from imageregistry.content.reference import InvalidName, parse_repository
from imageregistry.httpinput import BodyTooLarge, InputError, client_host, read_body
from imageregistry.observability.requestinfo import note_unauthenticated, note_user
from imageregistry.oci.errors import RegistryError
from imageregistry.oci.gate import Origin, basic_password, challenge_headers, too_many_logins

# The form holds a password or a token (a service-account JWT is 1-2 KiB) and a scope
# list; 64 KiB is far above any real request and small enough to hold in memory.
FORM_LIMIT = 64 * 1024
_MAX_FIELDS = 64
# Scope entries answered per request; each costs an authorization check.
_MAX_SCOPES = 32
_FORM_TYPE = "application/x-www-form-urlencoded"
_TRUE = ("1", "t", "true")
_FALSE = ("", "0", "f", "false")
_SCOPE_ACTIONS: dict[str, tuple[RegistryAction, ...]] = {
    "pull": (RegistryAction.PULL,),
    "push": (RegistryAction.PUSH,),
    "delete": (RegistryAction.DELETE_TAG, RegistryAction.DELETE_DIGEST),
}


@dataclass(frozen=True)
class TokenIssuer:
    """What the token endpoint uses: the authenticator that checks credentials and issues
    access tokens, the authorizer that narrows a requested scope to the granted one, the
    refresh-token store (None: no `access_type=offline` grants), the clock, the access
    token lifetime and the origin its challenges name."""

    authn: Authenticator
    authz: Authorizer
    refresh_tokens: RefreshTokens | None
    clock: Clock
    token_ttl_seconds: int
    origin: Origin


class OAuthError(Exception):
    """An RFC 6749 §5.2 error; rendered with the OCI envelope too, which docker reads."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        oci_code: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.oci_code = oci_code
        self.headers = dict(headers or {})


def _invalid_request(description: str, status: int = 400) -> OAuthError:
    return OAuthError(status, "invalid_request", description, "UNSUPPORTED")


def _invalid_grant(description: str) -> OAuthError:
    return OAuthError(401, "invalid_grant", description, "UNAUTHORIZED")


def _throttled(exc: TooManyFailedLogins) -> OAuthError:
    retry = {"Retry-After": str(exc.retry_after)}
    return OAuthError(429, "temporarily_unavailable", str(exc), "TOOMANYREQUESTS", retry)


async def token_endpoint(request: Request, tokens: TokenIssuer) -> JSONResponse:
    try:
        if request.method == "POST":
            return await _post(request, tokens)
        return await _get(request, tokens)
    except OAuthError as exc:
        headers = {"Cache-Control": "no-store", **exc.headers}
        if exc.status == 401:
            headers.update(challenge_headers(request, tokens.origin, None, None))
        body = {
            "error": exc.error,
            "error_description": exc.description,
            "errors": [{"code": exc.oci_code, "message": exc.description, "detail": None}],
        }
        return JSONResponse(body, status_code=exc.status, headers=headers)


async def _get(request: Request, tokens: TokenIssuer) -> JSONResponse:
    """`GET /v2/token`: credentials in the `Authorization` header (or none: anonymous)."""
    header = request.headers.get("authorization", "")
    offline = _flag(request.query_params.getlist("offline_token"), "offline_token")
    scheme, _, value = header.strip().partition(" ")
    presented: str | None = None
    if scheme.lower() == "bearer" and value.strip():
        presented = value.strip()
    elif header:
        presented = basic_password(header)
    authn = tokens.authn
    try:
        if presented is not None:
            try:
                user = await run_in_threadpool(authn.authenticate_token, presented)
                return await _answer(tokens, user, presented, offline, "")
            except Unauthenticated:
                if scheme.lower() == "bearer":
                    raise
        user = await run_in_threadpool(
            functools.partial(authn.authenticate, header or None, source=client_host(request.scope))
        )
    except TooManyFailedLogins as exc:
        note_unauthenticated(header or None)
        raise too_many_logins(exc) from None
    except Unauthenticated as exc:
        note_unauthenticated(header or None)
        raise RegistryError(
            "UNAUTHORIZED",
            f"authentication failed: {exc}",
            headers=challenge_headers(request, tokens.origin, None, None),
        ) from None
    # No header (anonymous: never a refresh token), or Basic with an htpasswd password.
    return await _answer(tokens, user, None, offline, "")


async def _post(request: Request, tokens: TokenIssuer) -> JSONResponse:
    """`POST /v2/token`: the OAuth2 password and refresh-token grants."""
    form = await _read_form(request)
    grant_type = _one(form, "grant_type")
    access_type = _one(form, "access_type") or "online"
    if access_type not in ("online", "offline"):
        raise _invalid_request(f"access_type must be online or offline, not {access_type[:64]!r}")
    offline = access_type == "offline"
    client_id = _one(form, "client_id")
    scopes = [s for value in form.get("scope", []) for s in value.split()]
    authn = tokens.authn
    if grant_type == "password":
        username, password = _one(form, "username"), _one(form, "password")
        if not username or not password:
            raise _invalid_request("the password grant needs username and password")
        try:
            user = await run_in_threadpool(authn.authenticate_token, password)
            credential: str | None = password
        except Unauthenticated:
            login = functools.partial(
                authn.authenticate_password, username, password, source=client_host(request.scope)
            )
            try:
                user = await run_in_threadpool(login)
            except TooManyFailedLogins as exc:
                note_unauthenticated(None, username)
                raise _throttled(exc) from None
            except Unauthenticated:
                note_unauthenticated(None, username)
                raise _invalid_grant("invalid username or password") from None
            credential = None
        return await _answer(tokens, user, credential, offline, client_id, scopes)
    if grant_type == "refresh_token":
        refresh = _one(form, "refresh_token")
        if not refresh:
            raise _invalid_request("the refresh_token grant needs refresh_token")
        return await _refresh(tokens, refresh, scopes)
    if not grant_type:
        raise _invalid_request("grant_type is required (password or refresh_token)")
    raise OAuthError(
        400,
        "unsupported_grant_type",
        f"grant_type {grant_type[:64]!r} is not supported (password or refresh_token)",
        "UNSUPPORTED",
    )


async def _refresh(tokens: TokenIssuer, refresh: str, scopes: list[str]) -> JSONResponse:
    """A refresh token of ours, or any token this server accepts (containerd sends a
    kubelet secret's `identitytoken`, or a password with an empty username, this way)."""
    ttl = _ttl(tokens)
    refresher = tokens.refresh_tokens
    if is_refresh_token(refresh):
        if refresher is None:
            raise _invalid_grant("refresh tokens are not enabled")
        try:
            refreshed = await run_in_threadpool(refresher.redeem, refresh)
            access, ttl = await run_in_threadpool(refresher.access_token, refreshed, ttl)
        except Unauthenticated as exc:
            note_unauthenticated(None)
            raise _invalid_grant(str(exc)) from None
        user = refreshed.user
    else:
        try:
            user = await run_in_threadpool(tokens.authn.authenticate_token, refresh)
        except Unauthenticated as exc:
            note_unauthenticated(None)
            raise _invalid_grant(str(exc)) from None
        access = refresh
    note_user(user)
    granted = await run_in_threadpool(_granted_scope, tokens, user, scopes)
    # RFC 6749 §6 and distribution: the refresh grant answers with the same refresh token.
    return _json(access, ttl, tokens.clock(), refresh_token=refresh, scope=granted)


async def _answer(
    tokens: TokenIssuer,
    user: UserInfo,
    credential: str | None,
    offline: bool,
    client_id: str,
    scopes: list[str] | None = None,
) -> JSONResponse:
    """The token for `user`: `credential` (a token they presented) or a new JWT."""
    note_user(user)
    ttl = _ttl(tokens)
    if credential is not None:
        access = credential
    else:
        access, _expiry = await run_in_threadpool(tokens.authn.issue_token, user, ttl)
    refresh: str | None = None
    if offline and not user.is_anonymous and tokens.refresh_tokens is not None:
        try:
            refresh = await run_in_threadpool(
                tokens.refresh_tokens.issue, user, credential, client_id
            )
        except Unauthenticated as exc:  # the token expired between the two checks
            raise _invalid_grant(str(exc)) from None
    granted = None
    if scopes is not None:
        granted = await run_in_threadpool(_granted_scope, tokens, user, scopes)
    return _json(access, ttl, tokens.clock(), refresh_token=refresh, scope=granted)


def _json(
    token: str,
    ttl: int,
    now: datetime,
    *,
    refresh_token: str | None = None,
    scope: str | None = None,
) -> JSONResponse:
    body: dict[str, object] = {
        "token": token,
        "access_token": token,
        "expires_in": ttl,
        "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if scope is not None:
        body["scope"] = scope
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _ttl(tokens: TokenIssuer) -> int:
    return max(60, tokens.token_ttl_seconds)


def _flag(values: list[str], name: str) -> bool:
    if len(values) > 1:
        raise _invalid_request(f"{name} given more than once")
    value = values[0].strip().lower() if values else ""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _invalid_request(f"{name} must be true or false")


def _one(form: Mapping[str, list[str]], name: str) -> str:
    """A parameter that RFC 6749 §3.2 allows at most once ("" when absent)."""
    values = form.get(name, [])
    if len(values) > 1:
        raise _invalid_request(f"parameter {name} given more than once")
    return values[0] if values else ""


async def _read_form(request: Request) -> dict[str, list[str]]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != _FORM_TYPE:
        raise _invalid_request(f"the token request body must be {_FORM_TYPE}")
    try:
        body = await read_body(request, FORM_LIMIT)
    except BodyTooLarge:
        raise _invalid_request("the token request body is larger than 64 KiB", 413) from None
    except InputError as exc:
        raise _invalid_request(str(exc)) from None
    try:
        return parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _invalid_request("the token request body is not a valid form") from None


def _granted_scope(tokens: TokenIssuer, user: UserInfo, scopes: list[str]) -> str:
    """The requested scope entries (`repository:NS/STREAM:ACTIONS`, `registry:catalog:*`)
    reduced to what `user` may do now; entries this registry does not know are left out."""
    granted: list[str] = []
    for entry in scopes[:_MAX_SCOPES]:
        kind, _, rest = entry.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "registry" and name == "catalog":
            if _allowed(tokens, user, RegistryAction.CATALOG, "", ""):
                granted.append("registry:catalog:*")
            continue
        if kind != "repository":
            continue
        try:
            repo = parse_repository(name)
        except InvalidName:
            continue
        wanted = [a for a in actions.split(",") if a]
        if "*" in wanted:
            wanted = list(_SCOPE_ACTIONS)
        allowed = [
            action
            for action in dict.fromkeys(wanted)
            if action in _SCOPE_ACTIONS
            and any(
                _allowed(tokens, user, check, repo.namespace, repo.stream)
                for check in _SCOPE_ACTIONS[action]
            )
        ]
        if allowed:
            granted.append(f"repository:{name}:{','.join(allowed)}")
    return " ".join(granted)


def _allowed(
    tokens: TokenIssuer, user: UserInfo, action: RegistryAction, namespace: str, stream: str
) -> bool:
    attrs = registry_attributes(user, action, namespace, stream)
    return tokens.authz.authorize(attrs).allowed
