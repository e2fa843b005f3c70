"""The API docs pages, /docs (Swagger UI) and /redoc, with their scripts served by the app itself.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, which leaves a blank page on an offline
machine. The `fastapi-offline` package (a `serve` dependency) ships those assets: Swagger UI 5
(Apache-2.0) and ReDoc 2 (MIT), which read the OpenAPI 3.1 schema FastAPI writes. Only its static
folder is used, through FastAPI's documented `get_swagger_ui_html`/`get_redoc_html`.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = files("fastapi_offline") / "static"
ASSETS_URL = "/docs-assets"  # its own prefix: a mount under /static would be shadowed by that mount


def add_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve /docs and /redoc from local assets. `app` must be built with docs_url=None, redoc_url=None.

    Like the other pages they stay open when an API key is set (GuardMiddleware guards /v1/ only);
    Swagger UI's "Authorize" button sends the key for the operations it tries out.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the FastAPI app with docs_url=None and redoc_url=None")
    openapi_url = app.openapi_url or "/openapi.json"

    def base(request: Request) -> str:  # behind a proxy that strips a prefix, as FastAPI's own pages do
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = base(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters)

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = base(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url, title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False)
        # ReDoc's sidebar credit always loads its logo from redoc.ly (and hides it when that fails):
        # forbid outside images so the page never reaches out, even on a machine that could.
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page

    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="docs-assets")
