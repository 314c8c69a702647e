"""Logging in with an API token, and out. The token is checked once, by the server's ``TokenVerifier``;
the browser then keeps only a signed session cookie (see ``stagewatch.web.session``)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from stagewatch.errors import Unauthenticated
from stagewatch.service.auth import READ, Identity, TokenVerifier
from stagewatch.web.access import CsrfRejected, app_context, browser_binding, read_form, web_state
from stagewatch.web.responses import PageRoute, local_path, redirect, render, set_cookie
from stagewatch.web.session import (
    BROWSER_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    csrf_ok,
    csrf_token,
    new_session,
    read_session,
)

log = logging.getLogger("stagewatch.web")
router = APIRouter(route_class=PageRoute)


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    if not app_context(request).settings.auth:
        return redirect(request, local_path(next))
    return _form(request, local_path(next))


def _form(request: Request, target: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    binding, fresh = browser_binding(request)
    response = render(
        request, None, "login.html", status=status, csrf=csrf_token(web_state(request).key, binding),
        next=target, error=error,
    )  # fmt: skip
    if fresh:
        set_cookie(request, response, BROWSER_COOKIE, fresh, SESSION_SECONDS)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await read_form(request)
    target = local_path(fields.get("next"))
    key = web_state(request).key
    if not csrf_ok(key, request.cookies.get(BROWSER_COOKIE), fields.get("csrf")):
        raise CsrfRejected
    try:
        identity = await _verify(request, fields.get("token", "").strip())
    except Unauthenticated as exc:
        return _form(request, target, f"That token was not accepted: {exc}.", status=401)
    if READ not in identity.scopes:
        granted = ", ".join(sorted(identity.scopes))
        message = f"Token {identity.name!r} has the scope {granted}; the dashboard needs read (or operate)."
        return _form(request, target, message, status=403)
    session = new_session(key, identity.name)
    response = redirect(request, target)
    set_cookie(request, response, SESSION_COOKIE, session.value, SESSION_SECONDS)
    log.info("web.login token=%s source=%s", identity.name, request.client.host if request.client else "-")
    return response


async def _verify(request: Request, token: str) -> Identity:
    if not token:
        raise Unauthenticated("paste a token, such as one from `stagewatch token create NAME --scope read`")
    verifier: TokenVerifier = request.app.state.token_verifier
    cached = verifier.cached(token)
    return cached if cached is not None else await run_in_threadpool(verifier.verify, token)


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    fields = await read_form(request)
    session = read_session(web_state(request).key, request.cookies.get(SESSION_COOKIE))
    if session is not None and not csrf_ok(web_state(request).key, session.value, fields.get("csrf")):
        raise CsrfRejected
    response = redirect(request, "/login", "You are logged out.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
