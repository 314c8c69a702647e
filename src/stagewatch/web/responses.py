"""Answering a browser: a rendered page with the dashboard's security headers, a redirect after a form
(with a one-time notice), and errors as HTML pages instead of the API's JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from stagewatch.api.errors import STATUS_OF
from stagewatch.errors import StagewatchError, Unauthenticated
from stagewatch.web.access import LoginRequired, Viewer, web_state
from stagewatch.web.session import BROWSER_COOKIE, SESSION_SECONDS

log = logging.getLogger("stagewatch.web")

NOTICE_COOKIE = "sw_notice"
# Scripts and styles come only from this server (no inline script, no CDN); nothing may frame a page.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def secure_cookie(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """A cookie no script can read, sent only to this site (and only over https when the page is)."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request),
    )


def render(
    request: Request, viewer: Viewer | None, template: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    """The page ``template`` with ``values``, the viewer, the path (for the navigation) and any notice."""
    env = web_state(request).templates
    notice = request.cookies.get(NOTICE_COOKIE)
    page = env.get_template(template).render(
        viewer=viewer, path=request.url.path, notice=unquote(notice) if notice else None, **values
    )
    response = HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    if viewer is not None and viewer.new_browser_id:
        set_cookie(request, response, BROWSER_COOKIE, viewer.new_browser_id, SESSION_SECONDS)
    return response


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this server (``/videos?x=1``), else ``default``: a form's "back to"
    field must never send anyone to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else default


def redirect(request: Request, target: str, notice: str | None = None) -> RedirectResponse:
    """303 to ``target`` (a local path); ``notice`` is shown once on the next page."""
    response = RedirectResponse(local_path(target), status_code=303, headers=SECURITY_HEADERS)
    if notice:
        set_cookie(request, response, NOTICE_COOKIE, quote(notice[:500]), 60)
    return response


def login_redirect(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": here}), status_code=303, headers=SECURITY_HEADERS)


def status_of(exc: Exception) -> int:
    return next((status for kind, status in STATUS_OF if isinstance(exc, kind)), 500)


def error_page(request: Request, exc: Exception) -> HTMLResponse:
    status = status_of(exc)
    return render(request, None, "error.html", status=status, status_code=status, message=str(exc))


class PageRoute(APIRoute):
    """A dashboard route: no session sends the browser to the login form, and a stagewatch error becomes
    an HTML page with the error's HTTP status (the API's routes answer JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if request.method != "GET":
                    return error_page(request, _SessionEnded())
                return login_redirect(request)
            except StagewatchError as exc:
                return error_page(request, exc)
            except Exception:
                log.exception("web.page_failed path=%s", request.url.path)
                return error_page(request, _Broken())

        return route


class _Broken(StagewatchError):
    """A page failed for a reason the browser cannot fix; the server's log has the traceback."""

    def __init__(self) -> None:
        super().__init__("this page failed on the server; its log says why (web.page_failed)")


class _SessionEnded(Unauthenticated):
    def __init__(self) -> None:
        super().__init__("your session has ended: log in again, then repeat the action")
