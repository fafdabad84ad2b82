"""The live dashboard: a static page (HTML, JS, CSS shipped in :mod:`mlgate.dashboard`).

The page holds no data and no credentials: it signs in with the user's API key (or
username and password) and reads the same JSON APIs as any client, with that key's
scopes. Its files are open, like the health routes. The content security policy allows
scripts, styles and requests from this origin only (no inline code, no third parties).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from mlgate.errors import NotFound

router = APIRouter(tags=["dashboard"], include_in_schema=False)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    files = resources.files("mlgate.dashboard")
    # Only the page's own files: a flat directory, known types, no path separators.
    if suffix not in _TYPES or "/" in name or "\\" in name or name.startswith("."):
        raise NotFound(f"no dashboard file {name[:64]!r}")
    asset = files.joinpath(name)
    if not asset.is_file():
        raise NotFound(f"no dashboard file {name[:64]!r}")
    return Response(asset.read_bytes(), media_type=_TYPES[suffix], headers=_SECURITY_HEADERS)


@router.get("/dashboard")
async def dashboard() -> Response:
    """The dashboard page."""
    return _asset("index.html")


@router.get("/dashboard/{name}")
async def dashboard_file(name: str) -> Response:
    """A script or stylesheet of the dashboard page."""
    return _asset(name)
