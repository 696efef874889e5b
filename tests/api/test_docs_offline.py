"""/docs works offline (issue 16): Swagger UI's assets come from the service
itself, and a Content-Security-Policy lets no page load anything from another origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy.engine import URL

from service.app import create_app
from tests.support.api import api_client
from tests.support.configs import settings_for


class _References(HTMLParser):
    """Every address an HTML page makes the browser load."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.addresses += [v for k, v in values.items() if k in {"src", "href"} and v]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def _csp(response: httpx.Response) -> dict[str, list[str]]:
    header = response.headers.get("content-security-policy", "")
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {words[0]: words[1:] for words in directives}


@pytest.fixture(scope="module")
async def client(module_database: URL) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(module_database) as client:
        yield client


async def test_the_docs_page_loads_only_assets_of_its_own_origin(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    references = _References()
    references.feed(page.text)
    assert references.inline_scripts == 0
    assert references.addresses, "the page loads Swagger UI"
    for address in references.addresses:
        # Same origin: an absolute path, not a scheme-relative or absolute URL.
        assert address.startswith("/"), address
        assert not address.startswith("//"), address
        asset = await client.get(address)
        assert asset.status_code == 200, address
        assert asset.content, address
    assert "://" not in page.text
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/init.js"} <= set(references.addresses)


async def test_the_initializer_loads_this_services_schema_and_no_validator(
    client: httpx.AsyncClient,
) -> None:
    initializer = await client.get("/docs/init.js")
    assert initializer.headers["content-type"].startswith("text/javascript")
    assert 'url: "/openapi.json"' in initializer.text
    assert "validatorUrl: null" in initializer.text
    assert "://" not in initializer.text
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    # Swagger UI 5 reads OpenAPI 3.1; version 4 shows nothing for it.
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "oas31" in bundle.text


async def test_the_docs_pages_forbid_every_other_origin(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/docs/init.js", "/docs/assets/swagger-ui.css"):
        policy = _csp(await client.get(path))
        assert policy["default-src"] == ["'none'"], path
        assert policy["script-src"] == ["'self'"], path
        assert policy["frame-ancestors"] == ["'none'"], path
        sources = {source for values in policy.values() for source in values}
        assert sources <= {"'self'", "'none'", "'unsafe-inline'", "data:"}, (path, sources)


async def test_only_the_pages_assets_are_served_and_redoc_is_gone(
    client: httpx.AsyncClient,
) -> None:
    # The package also holds an initializer that loads an example from another site.
    for path in (
        "/docs/assets/swagger-initializer.js",
        "/docs/assets/..%2F__init__.py",
        "/docs/assets/swagger-editor-bundle.js",
        "/redoc",
        "/docs/oauth2-redirect",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] != "text/html", path


async def test_every_html_page_of_the_service_has_the_policy(
    client: httpx.AsyncClient, module_database: URL
) -> None:
    """Any route answering HTML is a page: each carries the policy (only /docs does now)."""
    app = create_app(settings_for(module_database))
    pages = []
    for route in app.routes:
        if (
            not isinstance(route, APIRoute)
            or "{" in route.path
            or "GET" not in (route.methods or set())
        ):
            continue
        response = await client.get(route.path)
        if response.headers.get("content-type", "").startswith("text/html"):
            pages.append(route.path)
            assert _csp(response)["default-src"] == ["'none'"], route.path
    assert pages == ["/docs"]
