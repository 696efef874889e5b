"""4c. What encoding an answer's JSON costs: CPU time per document, in one
process, for the renderer the service used before (the standard library's
`json.dumps` with Starlette's JSONResponse options) and the one it uses now
(service/api/encoding.py: orjson, falling back to the standard library for
what orjson refuses). The documents are shaped as the /v1 API's configs are
(a resource with typed items, overrides, timestamps, a relationship and a
link): one config, as a point read answers, and a page of 50. Each is encoded
ENCODES times in turn by each encoder, REPEAT times; the figure is CPU
microseconds per document (`time.process_time`, so other work on the machine
counts less than in a wall-clock figure).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL

from bench.harness import ratio, summary
from service.api.encoding import encode

ENCODES = {"one config": 20_000, "a page of 50": 1_000}


def _config(number: int) -> dict[str, Any]:
    return {
        "type": "configs",
        "id": str(uuid.uuid4()),
        "attributes": {
            "key": f"service-{number}",
            "name": "Billing — Zürich",
            "description": None,
            "items": {"currency": "EUR", "retries": 3, "ratio": 0.25, "hosts": ["a", "b"]},
            "environments": {"production": {"retries": 5}},
            "created_at": "2026-12-06T10:00:00.123456Z",
            "updated_at": "2026-12-06T10:00:00.123456Z",
        },
        "relationships": {"parent": {"data": None}},
        "links": {"self": f"/v1/configs/{number}"},
    }


def _standard(document: Any) -> bytes:
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _per_document(encoder: Callable[[Any], bytes], document: Any, times: int) -> float:
    started = time.process_time()
    for _ in range(times):
        encoder(document)
    return (time.process_time() - started) / times * 1e6


def benchmark(admin: URL, repeat: int) -> dict[str, Any]:
    del admin  # no database: encoding only
    documents: dict[str, dict[str, Any]] = {
        "one config": {"data": _config(0), "jsonapi": {"version": "1.1"}},
        "a page of 50": {
            "data": [_config(number) for number in range(50)],
            "links": {"self": "/v1/configs", "next": None},
            "jsonapi": {"version": "1.1"},
        },
    }
    results: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    for label, document in documents.items():
        times = ENCODES[label]
        assert json.loads(encode(document)) == json.loads(_standard(document))
        samples: dict[str, list[float]] = {"json.dumps (before)": [], "orjson (now)": []}
        for _ in range(repeat):
            samples["json.dumps (before)"].append(_per_document(_standard, document, times))
            samples["orjson (now)"].append(_per_document(encode, document, times))
        results[label] = {name: summary(values, 2) for name, values in samples.items()}
        ratios[f"{label}: now / before"] = ratio(
            results[label]["orjson (now)"], results[label]["json.dumps (before)"]
        )
    return {
        "title": "Encoding an answer's JSON",
        "method": __doc__,
        "unit": "CPU microseconds per document",
        "results": results,
        "ratios": ratios,
    }
