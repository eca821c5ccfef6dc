"""Rendering console pages: Jinja2 with autoescape on for every template (every value shown may
come from a callback body, which anyone able to reach the webhook can write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"

# Pages may hold personal data and audit evidence: never cached, never framed.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _path(value: Any) -> str:
    """A value as one path segment (a message id may hold '/', '?' or '#')."""
    return quote(str(value), safe="")


def _ref(value: Any) -> str:
    """A callback reference `<stream>/<key>` in a path: the '/' between them kept."""
    return quote(str(value), safe="/")


def _duration(seconds: float) -> str:
    """A lateness as people read it: 45 s, 12 min, 5 h, 3 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template, whatever its name
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["seg"] = _path
environment.filters["ref"] = _ref
environment.filters["duration"] = _duration


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    visitor = getattr(request.state, "visitor", None)
    html = environment.get_template(template).render(
        request_path=request.url.path, visitor=visitor, **context
    )
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def problem(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    return page(request, "error.html", status_code, title=title, message=message)
