"""The OpenAPI document tells the truth about errors: every operation lists the refusals it can give.

FastAPI documents only 200 and its own 422 (``HTTPValidationError``, whose ``detail`` is a list).
Every error of this API is ``ErrorPublic`` (``spinline.cloud.api.errors``), so the document is
post-processed once: each operation's 422 points at ``ErrorPublic``, and the statuses any operation
can answer (400, 401 without a valid token, 403, 404, 409, 413, 429, 503) are added where they apply.
The edge routes (ingest, status, events, TUF) keep their own refusal body for the edges
(``IngestRefusal``, with the same ``code``) and answer ``ErrorPublic`` only for a request FastAPI
cannot validate (422) or an outage (503).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from spinline.cloud.api.errors import ErrorPublic

_REF = {"$ref": "#/components/schemas/ErrorPublic"}

DESCRIPTIONS = {
    "400": "the request cannot be read: a body that is not JSON, or a client address that is not an IP "
           "address (codes bad_request, bad_client_address)",
    "401": "not authenticated: no, an expired or a revoked token (code not_authenticated)",
    "403": "the caller's role may not do this (code forbidden)",
    "404": "unknown, or outside the caller's mills (code not_found)",
    "409": "refused by the record's state, or the id is taken (code conflict)",
    "413": "the body is larger than the limit (code body_too_large)",
    "422": "the request is not valid; ``errors`` lists the fields (codes invalid_request, span_too_large, "
           "time_out_of_range, nul_character ...)",
    "429": "too many requests at once or too many attempts; see Retry-After (codes too_many_concurrent_requests, "
           "rate_limited)",
    "503": "the database is unavailable or did not answer in time; see Retry-After "
           "(codes storage_unavailable, timeout, login_busy)",
}


def _statuses(path: str, method: str, op: dict[str, Any]) -> list[str]:
    public = path.endswith("/auth/login")
    out = ["400", "422", "503"]
    if not public:
        out += ["401", "403", "404", "429"]
    else:
        out += ["429"]
    if method in ("post", "put", "patch"):
        out += ["409", "413"]
    return out


def _fix(doc: dict[str, Any]) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}").get(
            "$defs", {}).items():
        schemas.setdefault(name, schema)
    main = ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}")
    main.pop("$defs", None)
    schemas["ErrorPublic"] = main
    for path, item in doc.get("paths", {}).items():
        ingest = path.endswith(("/ingest", "/edge-status", "/edge-events")) or "/tuf/" in path
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            codes = ["422", "503"] if ingest else _statuses(path, method, op)
            for code in codes:
                entry = responses.get(code)
                if entry is None or code == "422":
                    responses[code] = {"description": DESCRIPTIONS[code],
                                       "content": {"application/json": {"schema": _REF}}}
                else:
                    entry["content"] = {"application/json": {"schema": _REF}}
                    entry.setdefault("description", DESCRIPTIONS[code])
    for stale in ("HTTPValidationError", "ValidationError"):
        schemas.pop(stale, None)
    return doc


def install(app: FastAPI) -> None:
    def custom() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _fix(get_openapi(title=app.title, version=app.version, description=app.description,
                                                  routes=app.routes))
        return app.openapi_schema

    app.openapi = custom  # type: ignore[method-assign]
