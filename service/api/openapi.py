"""The OpenAPI document: FastAPI's, plus the JSON value schemas the models refer to."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.api.limits import JSON_SCHEMAS


def add_json_value_schemas(app: FastAPI) -> None:
    """Add JsonValue and JsonObject to the components of the app's document
    (recursive schemas, which pydantic's per-field schemas cannot hold)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {}).setdefault("schemas", {}).update(JSON_SCHEMAS)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
