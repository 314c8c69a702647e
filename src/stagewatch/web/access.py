"""Who is looking at the dashboard, and what they may do.

Pages declare ``who: Who`` to require a logged-in viewer (any active token: ``read`` sees everything);
actions declare ``form: OperatorForm``, which also checks the CSRF token and the ``operate`` scope. With
auth off (``--no-auth``, loopback only) everyone is ``anonymous`` with every scope, as in the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import ANONYMOUS
from stagewatch.api.context import AppContext
from stagewatch.errors import Forbidden, InvalidShape, PayloadTooLarge
from stagewatch.service.auth import ALL_SCOPES, OPERATE
from stagewatch.store.audit import Actor
from stagewatch.web.live import SHARED_READ_MAX_AGE, SharedRead
from stagewatch.web.session import (
    BROWSER_COOKIE,
    SESSION_COOKIE,
    active_identity,
    csrf_ok,
    csrf_token,
    new_browser_id,
    read_session,
)

MAX_FORM_BYTES = 256 * 1024


class LoginRequired(Exception):
    """No valid session: the page answers with a redirect to the login form."""


class CsrfRejected(Forbidden):
    def __init__(self) -> None:
        super().__init__(
            "this form is out of date or did not come from this dashboard: reload the page and try again",
            scope="csrf",
        )


@dataclass(frozen=True, slots=True)
class WebState:
    """What the dashboard keeps for the life of the app: the session key, the templates, and the
    overview's model as the live streams share it."""

    key: bytes
    templates: Environment
    overview: SharedRead[dict[str, Any]] = field(default_factory=lambda: SharedRead(SHARED_READ_MAX_AGE))


def app_context(request: Request) -> AppContext:
    """The server's context (``api.context.context`` is the same, as an async dependency)."""
    ctx: AppContext = request.app.state.ctx
    return ctx


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person at the browser: the token's name (the audit trail's actor), scopes and address.
    ``csrf`` goes into every form; ``new_browser_id`` is a cookie the response must set (auth off)."""

    name: str
    scopes: frozenset[str]
    source: str | None
    csrf: str
    auth: bool
    new_browser_id: str | None = None

    @property
    def can_operate(self) -> bool:
        return OPERATE in self.scopes

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.source)


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


def browser_binding(request: Request) -> tuple[str, str | None]:
    """This browser's random id (from its cookie), and a new one to set when it has none yet."""
    existing = request.cookies.get(BROWSER_COOKIE)
    if existing:
        return existing, None
    fresh = new_browser_id()
    return fresh, fresh


async def current_viewer(request: Request) -> Viewer:
    ctx = app_context(request)
    key = web_state(request).key
    if not ctx.settings.auth:
        binding, fresh = browser_binding(request)
        return Viewer(ANONYMOUS, ALL_SCOPES, _source(request), csrf_token(key, binding), False, fresh)
    session = read_session(key, request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired
    identity = await run_in_threadpool(active_identity, ctx.db, session.name)
    if identity is None:
        raise LoginRequired
    return Viewer(identity.name, identity.scopes, _source(request), csrf_token(key, session.value), True)


Who = Annotated[Viewer, Depends(current_viewer)]


async def session_still_valid(request: Request) -> bool:
    """For a long-lived stream: is the viewer's session still good (not expired, token not revoked)?"""
    try:
        await current_viewer(request)
    except LoginRequired:
        return False
    return True


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a repeated field wins)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"a form is at most {MAX_FORM_BYTES // 1024} KiB")
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


def check_csrf(request: Request, viewer: Viewer, form: Mapping[str, str]) -> None:
    """Refuse a POST whose CSRF token is not this session's, or that another site's page sent."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise CsrfRejected
    binding = request.cookies.get(SESSION_COOKIE) if viewer.auth else request.cookies.get(BROWSER_COOKIE)
    if not csrf_ok(web_state(request).key, binding, form.get("csrf")):
        raise CsrfRejected


@dataclass(frozen=True, slots=True)
class PostedForm:
    """A form posted by an operator, its CSRF token checked."""

    viewer: Viewer
    fields: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default).strip()

    def required(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise InvalidShape(f"{name} is missing", field=name)
        return value

    def reason(self) -> str:
        """The operator's reason, which every action needs: it goes into the audit trail."""
        reason = self.get("reason")
        if not reason:
            raise InvalidShape("give a reason: it goes into the audit trail", field="reason")
        return reason


async def operator_form(request: Request, viewer: Who) -> PostedForm:
    fields = await read_form(request)
    check_csrf(request, viewer, fields)
    if not viewer.can_operate:
        granted = ", ".join(sorted(viewer.scopes)) or "none"
        raise Forbidden(
            f"this needs the 'operate' scope; you are logged in as {viewer.name!r} with: {granted}",
            scope=OPERATE,
        )
    return PostedForm(viewer, fields)


OperatorForm = Annotated[PostedForm, Depends(operator_form)]
