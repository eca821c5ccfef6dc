"""The console's routes, the scope each needs, sign-in and sign-out, and the static stylesheet.

Every page is wrapped by `protect`: the request's key (session cookie or Bearer) must
hold the route's scope, else the page says so (401 or 403 page, never a 500). Without a key a
browser is sent to the sign-in form. Audit pages are written to the access log, as the API's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from api.auth import ADMIN, ANY_KEY, AUDIT, READ, Denied
from api.console import (
    callbacks,
    compliance,
    contact,
    health,
    message,
    overview,
    quarantine,
    search,
)
from api.console.context import Context, form, visitor
from api.console.render import page, problem
from api.console.session import SignIn, csrf_ok
from projections.faults import summary
from store.backend import store_unavailable

PUBLIC = "no key: the sign-in form and the stylesheet"
STATIC = Path(__file__).parent / "static"

Handler = Callable[[Context, Request], Awaitable[Response]]

# The forms; every other route is a GET.
METHODS = {
    "/console/sign-in": ["GET", "POST"],
    "/console/sign-out": ["POST"],
    "/console/quarantine/{entry_id}/resolve": ["POST"],
}


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (no open redirect)."""
    if (
        value
        and value.startswith("/console")
        and not any(bad in value for bad in ("//", "\\", "\n", "\r"))
    ):
        return value
    return "/console/search"


def protect(context: Context, handler: Handler, needs: str, route: str) -> Any:
    async def guarded(request: Request) -> Response:
        try:
            return await checked(request)
        except Exception as exc:
            if not store_unavailable(context.runtime.backend, exc):
                raise
            # The store cannot be reached: a page that says so, as the API's 503.
            answer = problem(request, 503, "The store is unavailable", summary(exc))
            answer.headers["Retry-After"] = str(context.runtime.settings.retry_after_s)
            return answer

    async def checked(request: Request) -> Response:
        try:
            who = await context.sessions.visitor(request)
        except SignIn:
            if request.method != "GET":
                return problem(request, 401, "Sign in first", "This form needs a session.")
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/sign-in?next={quote(target, safe='')}", 303)
        except Denied as denied:
            return problem(request, 401, "Not signed in", denied.detail)
        request.state.visitor = who
        request.scope["ledger.key_name"] = who.name  # for the request's log line
        if needs != ANY_KEY and not who.may(needs):
            return problem(
                request,
                403,
                "Not allowed",
                f"The key {who.name!r} lacks the {needs!r} scope this page needs "
                f"(it has: {', '.join(sorted(who.key.scopes))}).",
            )
        try:
            response = await handler(context, request)
        except HTTPException as exc:  # a bad parameter or form: said on a page
            return problem(request, exc.status_code, "Cannot show this", str(exc.detail))
        if needs == AUDIT or getattr(request.state, "audited", False):
            await context.sessions.guard.log_access(request, who.name, route, response)
        return response

    guarded.needs = needs  # type: ignore[attr-defined]
    guarded.__name__ = getattr(handler, "__name__", "console")
    return guarded


async def home(context: Context, request: Request) -> Response:
    return RedirectResponse("/console/search", 303)


async def sign_in(context: Context, request: Request) -> Response:
    sessions = context.sessions
    if request.method == "POST":
        fields = await form(request)
        target = safe_next(fields.get("next"))
        if not await sessions.sign_in_token_matches(request, fields.get("csrf", "")):
            return await _sign_in_form(
                context, request, 403, "The form expired or did not come from this page: try again."
            )
        key = await sessions.key_of(fields.get("key", "").strip())
        if key is None:
            return await _sign_in_form(
                context, request, 401, "This key is not known, or it was revoked or has expired."
            )
        response = RedirectResponse(target, 303)
        await sessions.start(response, request, key)
        return response
    return await _sign_in_form(context, request, 200, None)


async def _sign_in_form(
    context: Context, request: Request, status: int, error: str | None
) -> Response:
    token, cookie = await context.sessions.sign_in_token(request)
    response = page(
        request,
        "sign_in.html",
        status,
        csrf=token,
        next=safe_next(request.query_params.get("next")),
        error=error,
    )
    if cookie is not None:
        context.sessions.keep_sign_in_token(response, request, cookie)
    return response


async def sign_out(context: Context, request: Request) -> Response:
    fields = await form(request)
    if not csrf_ok(visitor(request), fields.get("csrf")):
        return problem(request, 403, "Refused", "The form did not come from this console.")
    response = RedirectResponse("/console/sign-in", 303)
    await context.sessions.end(response, request)
    return response


async def stylesheet(context: Context, request: Request) -> Response:
    return FileResponse(
        STATIC / "console.css",
        media_type="text/css",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


# The scope and page of each console route (ROUTE_SCOPES in api/app.py includes the scopes).
# Pages that show raw bodies, consent history or violations need audit; a number's or
# contact's page needs read and shows its audit parts only to a key that also has audit.
# Resolving a quarantined body writes to the ledger: admin.
ROUTES: dict[str, tuple[str, Handler]] = {
    "/console": (ANY_KEY, home),
    "/console/sign-in": (PUBLIC, sign_in),
    "/console/sign-out": (ANY_KEY, sign_out),
    "/console/static/console.css": (PUBLIC, stylesheet),
    "/console/search": (READ, search.search_page),
    "/console/messages/{message_id}": (READ, message.message_page),
    "/console/numbers/{identity}": (READ, contact.number_page),
    "/console/contacts/{contact_id}": (READ, contact.contact_page),
    "/console/overview": (READ, overview.overview_page),
    "/console/quarantine": (AUDIT, quarantine.list_page),
    "/console/quarantine/{entry_id}": (AUDIT, quarantine.entry_page),
    "/console/quarantine/{entry_id}/resolve": (ADMIN, quarantine.resolve),
    "/console/callbacks/{reference:path}": (AUDIT, quarantine.callback_page),
    "/console/callbacks": (AUDIT, callbacks.list_page),
    "/console/health": (ANY_KEY, health.health_page),
    "/console/compliance": (AUDIT, compliance.report_page),
    "/console/compliance.csv": (AUDIT, compliance.report_csv),
}
CONSOLE_SCOPES = {path: needs for path, (needs, _) in ROUTES.items()}


def routes(context: Context) -> list[Route]:
    found = []
    for path, (needs, handler) in ROUTES.items():
        if needs == PUBLIC:
            endpoint = unguarded(context, handler, needs)
        else:
            endpoint = protect(context, handler, needs, path.replace(":path", ""))
        route = Route(path, endpoint, methods=METHODS.get(path, ["GET"]))
        route.needs = needs  # type: ignore[attr-defined]
        found.append(route)
    return found


def unguarded(context: Context, handler: Handler, needs: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await handler(context, request)

    endpoint.needs = needs  # type: ignore[attr-defined]
    return endpoint
