"""The API documentation page: ReDoc over the app's OpenAPI schema, served without any CDN.

The page and its JavaScript come from this server, so the documentation works on an offline
network. The ReDoc bundle is the one shipped by the ``fastapi-offline`` package (located on disk,
never imported). ``/``, ``/docs`` and ``/docs/`` all answer 200 (spec §4.10: load balancers
health-check ``/docs/`` and accept no redirect).
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from carina.server.openapi import install_schema

log = logging.getLogger(__name__)

#: Paths of the documentation page (the AIAA clients and Clara used all three).
DOCS_PATHS = ("/", "/docs", "/docs/")
REDOC_JS_PATH = "/static/redoc.standalone.js"
FAVICON_PATHS = ("/static/favicon.png", "/favicon.ico")

_CACHE_CONTROL = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class _Asset:
    """A static file held in memory, served with Content-Length and a long cache lifetime."""

    content: bytes
    media_type: str

    @property
    def version(self) -> str:
        """A short content hash, appended to the URL so that a new bundle is fetched again."""
        return hashlib.sha256(self.content).hexdigest()[:12]

    async def response(self) -> Response:
        """The file, as an endpoint."""
        return Response(
            content=self.content,
            media_type=self.media_type,
            headers={"Cache-Control": _CACHE_CONTROL},
        )


def _static_dir() -> Path | None:
    """The ``static/`` folder of the installed ``fastapi_offline`` package, without importing it."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if folder.is_dir() else None


def _read_asset(name: str, *, media_type: str) -> _Asset | None:
    folder = _static_dir()
    if folder is None or not (folder / name).is_file():
        log.warning(
            "fastapi-offline's static/%s was not found, so the API docs page goes without it "
            "(install carina[server])",
            name,
        )
        return None
    return _Asset((folder / name).read_bytes(), media_type)


def render_docs_page(*, title: str, spec_url: str, script_url: str, favicon_url: str) -> str:
    """The HTML of the ReDoc page; every URL in it is a path on this server.

    ReDoc 2 loads no web font by itself (only FastAPI's template links Google Fonts), so the page
    links none and the system's sans-serif fonts are used. The "Download OpenAPI specification"
    button stays on (ReDoc's ``hideDownloadButton`` is not set).
    """
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" type="image/png" href="{html.escape(favicon_url)}">
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<noscript>The API documentation needs JavaScript. The raw schema is at
<a href="{html.escape(spec_url)}">{html.escape(spec_url)}</a>.</noscript>
<redoc spec-url="{html.escape(spec_url)}"></redoc>
<script src="{html.escape(script_url)}"></script>
</body>
</html>
"""


def add_docs_routes(app: FastAPI) -> None:
    """Serve the ReDoc page at ``/``, ``/docs`` and ``/docs/`` and its assets, none in the schema,
    and have the schema it shows tell what the server sends (``openapi.install_schema``).

    Args:
        app: the application; built with ``docs_url=None, redoc_url=None`` and an ``openapi_url``.

    Raises:
        ValueError: the app serves no OpenAPI schema (``openapi_url=None``).
    """
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the API docs page needs the app's OpenAPI schema (openapi_url is None)")
    install_schema(app)
    script = _read_asset("redoc.standalone.js", media_type="application/javascript")
    favicon = _read_asset("favicon.png", media_type="image/png")
    script_query = f"?v={script.version}" if script is not None else ""

    async def docs_page(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        page = render_docs_page(
            title=app.title,
            spec_url=f"{root}{openapi_url}",
            script_url=f"{root}{REDOC_JS_PATH}{script_query}",
            favicon_url=f"{root}{FAVICON_PATHS[0]}",
        )
        return HTMLResponse(page)

    for path in DOCS_PATHS:
        app.add_api_route(path, docs_page, methods=["GET", "HEAD"], include_in_schema=False)
    if script is not None:
        app.add_api_route(
            REDOC_JS_PATH, script.response, methods=["GET", "HEAD"], include_in_schema=False
        )
    if favicon is not None:
        for path in FAVICON_PATHS:
            app.add_api_route(
                path, favicon.response, methods=["GET", "HEAD"], include_in_schema=False
            )
