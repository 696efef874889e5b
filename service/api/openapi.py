"""The OpenAPI document: FastAPI's, plus what FastAPI cannot say from the routes:
the recursive JSON value schemas the models refer to, and who may call what
(security schemes: an API key, or the operator token)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.api.errors import ErrorDocument
from service.api.limits import JSON_SCHEMAS

SECURITY_SCHEMES = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (psk_...): Authorization: Bearer <key>",
    },
    "operatorToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator token (OPERATOR_TOKEN): Authorization: Bearer <token>",
    },
}
# Routes that take the operator token say so themselves (`openapi_extra`).
OPERATOR_ONLY: dict[str, Any] = {"security": [{"operatorToken": []}]}
_API_KEY: list[dict[str, list[str]]] = [{"apiKey": []}]


def complete_openapi(app: FastAPI) -> None:
    """Add the JSON value schemas and the security schemes to the app's
    document, and name the API key as the security of every /v1 and /api/v1 operation
    that does not name the operator token."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            components = document.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update(JSON_SCHEMAS)
            schemas.update(_error_schemas())
            components["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in document.get("paths", {}).items():
                if path.startswith(("/v1", "/api/v1")):
                    for operation in operations.values():
                        operation.setdefault("security", _API_KEY)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _error_schemas() -> dict[str, Any]:
    """ErrorDocument's schema and those it refers to, as FastAPI names a
    response model's (the error responses name it: service/api/errors.py)."""
    schema = ErrorDocument.model_json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "ErrorDocument": schema}
