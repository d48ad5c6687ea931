"""One exception hierarchy for the whole server; the HTTP edge maps each to its OData error body and status.

Everything below raises these (or lets a bug surface as a 500 that the edge logs); nothing else catches broadly.
"""

from __future__ import annotations


class ODataSyncError(Exception):
    """Base: an error a client can be told about. ``status`` and ``code`` pick the HTTP answer."""

    status = 500
    code = "InternalError"

    def __init__(self, message: str, *, target: str | None = None, details: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target
        self.details = details or []
        self.headers = headers or {}

    def to_json(self) -> dict:
        error: dict = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        error["details"] = self.details
        return {"error": error}


class BadRequest(ODataSyncError):
    status, code = 400, "BadRequest"


class Unauthorized(ODataSyncError):
    status, code = 401, "Unauthorized"


class Forbidden(ODataSyncError):
    status, code = 403, "Forbidden"


class NotFound(ODataSyncError):
    status, code = 404, "NotFound"


class MethodNotAllowed(ODataSyncError):
    status, code = 405, "MethodNotAllowed"


class NotAcceptable(ODataSyncError):
    status, code = 406, "NotAcceptable"


class Conflict(ODataSyncError):
    status, code = 409, "Conflict"


class PreconditionFailed(ODataSyncError):
    status, code = 412, "PreconditionFailed"


class PayloadTooLarge(ODataSyncError):
    status, code = 413, "PayloadTooLarge"


class UnsupportedMediaType(ODataSyncError):
    status, code = 415, "UnsupportedMediaType"


class NotImplementedYet(ODataSyncError):
    """Valid OData (or a declared action) that this server does not support yet: 501."""

    status, code = 501, "NotImplemented"


class ConnectionFailed(ODataSyncError):
    """A connector could not connect, authenticate or run its query (driver message kept, secrets stripped)."""

    status, code = 400, "ConnectionFailed"
