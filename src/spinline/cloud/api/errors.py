"""One error body for every refusal of the API, with a stable machine-readable code.

Every 4xx/5xx answer of the JSON API is ``ErrorPublic``::

    {"code": "span_too_large", "detail": "the span is 36500 days; at most 93 days ...", "errors": null}

- ``code`` is stable (clients switch on it; the text may change or be translated);
- ``detail`` is always one string for people, naming the problem (FastAPI's ``detail`` kept so
  existing clients keep working, but never a list);
- ``key`` and ``params``, where the detail was built from a message template (``spinline.core.texts``,
  ``error.*``): the console shows the reader's language from them and falls back to ``detail``;
- ``errors`` lists the fields for a request that failed validation (``code`` ``invalid_request``),
  each with its location, message and pydantic type; null otherwise.

Routes raise ``ApiError(status, code, detail)`` (an ``HTTPException``) or a plain ``HTTPException``
(its code is then the default of its status, ``DEFAULT_CODES``). The handlers here render both, the
validation errors of FastAPI, and the storage failures (503 with ``Retry-After``): nothing else
leaves the app in another shape. The ingest routes answer the edges with ``IngestRefusal``, which
carries the same ``code`` and ``detail`` (plus the ``reason`` the edge protocol knows).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from spinline.core.texts import TEMPLATES, Text, keyed, match

logger = logging.getLogger(__name__)

#: The code of a refusal whose raiser named none.
DEFAULT_CODES: dict[int, str] = {
    400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
    429: "too_many_requests", 500: "internal_error", 503: "unavailable", 504: "timeout",
}

#: Seconds a client is told to wait after a storage outage or timeout.
RETRY_AFTER_STORAGE_S = 5


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body/query/path/header, then the field path")
    msg: str
    type: str
    key: str | None = Field(default=None, description="console message key of `<loc>: <msg>` (error.field.<type>, "
                                                      "else error.field.invalid)", examples=["error.field.missing"])
    params: dict[str, str] | None = Field(default=None, description="the parameters of `key`: field, and the "
                                                                    "limit where the message names one")


class ErrorPublic(BaseModel):
    """The body of every error answer (see the module docstring of ``spinline.cloud.api.errors``)."""

    code: str = Field(description="stable machine-readable code, e.g. span_too_large, not_found, rate_limited",
                      examples=["span_too_large"])
    detail: str = Field(description="what is wrong, for people")
    key: str | None = Field(default=None, description="console message key of `detail`; null: show `detail`",
                            examples=["error.span_too_large"])
    params: dict[str, str] | None = Field(default=None, description="the parameters of `key` (figures as in detail)")
    errors: list[FieldError] | None = Field(default=None, description="the invalid fields (code invalid_request)")


class ApiError(HTTPException):
    """An HTTP refusal with a stable ``code``."""

    def __init__(self, status_code: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None,
                 text: Text | None = None) -> None:
        super().__init__(status_code, detail, headers=dict(headers) if headers else None)
        self.code = code
        self.text = text


def keyed_error(status_code: int, code: str, params: Mapping[str, object], *, key: str | None = None,
                headers: Mapping[str, str] | None = None) -> ApiError:
    """An ``ApiError`` whose detail is the English of ``key`` (default ``error.<code>``) with ``params``.

    The body then carries the key and parameters, so the console says it in the reader's language.
    """
    t = Text(key or f"error.{code}", {k: str(v) for k, v in params.items()})
    return ApiError(status_code, code, t.en, headers=headers, text=t)


def error_body(status_code: int, detail: str, code: str | None = None,
               errors: Sequence[FieldError] | None = None, text: Text | None = None) -> dict[str, Any]:
    return ErrorPublic(code=code or DEFAULT_CODES.get(status_code, "error"), detail=detail,
                       key=text.key if text else None, params=dict(text.params) if text else None,
                       errors=list(errors) if errors is not None else None).model_dump(mode="json")


def error_response(status_code: int, detail: str, code: str | None = None, *,
                   headers: Mapping[str, str] | None = None,
                   errors: Sequence[FieldError] | None = None, text: Text | None = None) -> JSONResponse:
    return JSONResponse(error_body(status_code, detail, code, errors, text), status_code=status_code,
                        headers=dict(headers) if headers else None)


def storage_unavailable(detail: str = "the database is unavailable; try again shortly",
                        code: str = "storage_unavailable") -> JSONResponse:
    return error_response(503, detail, code, headers={"Retry-After": str(RETRY_AFTER_STORAGE_S)})


def _text(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for e in exc.errors():
        loc = [x if isinstance(x, int) else _text(x) for x in e.get("loc", ())]
        msg, kind = _text(e.get("msg", "")), _text(e.get("type", ""))
        t = field_text(".".join(str(x) for x in loc), kind, msg)
        out.append(FieldError(loc=loc, msg=msg, type=kind, key=t.key, params=dict(t.params)))
    return out


def field_text(field: str, kind: str, msg: str) -> Text:
    """``"<field>: <msg>"`` as a message key: ``error.field.<kind>`` with the figures its message names (read
    from the message, so they print as pydantic printed them), else ``error.field.invalid`` naming the field."""
    line = f"{field}: {msg}"
    tpl = TEMPLATES.get(f"error.field.{kind}")
    found = match(tpl, line) if tpl is not None and kind != "invalid" else None
    keyed_ = keyed(f"error.field.{kind}", found, line) if found is not None else None
    return keyed_ or Text("error.field.invalid", {"field": field, "msg": msg})


def _summary(errors: Sequence[FieldError]) -> str:
    parts = [f"{'.'.join(str(x) for x in e.loc)}: {e.msg}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more if parts else "the request is not valid"


def storage_exceptions() -> tuple[type[Exception], ...]:
    """The exception types that mean the database failed (connection, timeout, server gone), not the request."""
    import sqlalchemy.exc

    from spinline.core.errors import StorageError

    types: list[type[Exception]] = [StorageError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                                        sqlalchemy.exc.TimeoutError]
    try:
        import psycopg

        types += [psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.QueryCanceled]
    except ModuleNotFoundError:  # pragma: no cover (psycopg is a dependency)
        pass
    try:
        import duckdb

        types += [duckdb.IOException, duckdb.ConnectionException, duckdb.InterruptException]
    except ModuleNotFoundError:  # pragma: no cover
        pass
    return tuple(types)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error answer the ``ErrorPublic`` shape."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None)
        return error_response(exc.status_code, _text(exc.detail), code, headers=exc.headers,
                              text=getattr(exc, "text", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        return error_response(422, _summary(errors), "invalid_request", errors=errors)

    async def _storage(request: Request, exc: Exception) -> JSONResponse:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.warning("storage failure on %s %s: %s", request.method, request.url.path, first[:300])
        return storage_unavailable()

    for kind in storage_exceptions():
        app.add_exception_handler(kind, _storage)
