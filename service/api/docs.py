"""The interactive API docs at /docs, complete without the internet.

FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN: offline
they are blank, and every visit tells a third party who reads the docs. Here
/docs serves Swagger UI 5 (which reads OpenAPI 3.1) from the installed
`swagger-ui-py` package, with an initializer of our own instead of an inline
script, under a Content-Security-Policy that lets the page load nothing from
another origin. There is no /redoc: no package ships ReDoc.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

DOCS = "/docs"
ASSETS = f"{DOCS}/assets"
# Only what the page uses: the package also holds an initializer that loads a
# petstore example from another site, and the Swagger Editor.
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "index.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# Swagger UI sets style attributes and draws its icons from data: URLs; nothing
# may come from, or be sent to, another origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
_ASSET_HEADERS = {**_HEADERS, "Cache-Control": "public, max-age=86400"}

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}} - API docs</title>
<link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="stylesheet" href="{ASSETS}/index.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{DOCS}/init.js"></script>
</body>
</html>
"""

# validatorUrl: null, or Swagger UI would send the schema to a validator online.
_INITIALIZER = """window.ui = SwaggerUIBundle({
  url: %s,
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def swagger_ui_assets() -> Path:
    """The static folder of the installed swagger-ui-py, found without importing it."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed (see requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install_docs(app: FastAPI) -> None:
    """Serve /docs; the app must be made with docs_url=None and redoc_url=None."""
    import json
    from html import escape

    assets = swagger_ui_assets()
    page = _PAGE.replace("{title}", escape(app.title))
    initializer = _INITIALIZER % json.dumps(app.openapi_url)

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={**_HEADERS, "Cache-Control": "no-cache"})

    @app.get(f"{DOCS}/init.js", include_in_schema=False)
    async def docs_initializer() -> Response:
        return Response(initializer, media_type="text/javascript", headers=_HEADERS)

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        media_type = _ASSET_TYPES.get(name)
        if media_type is None:
            raise HTTPException(404, f"no asset {name!r} in the docs")
        return FileResponse(assets / name, media_type=media_type, headers=_ASSET_HEADERS)
