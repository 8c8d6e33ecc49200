"""The errors Concierge raises, each carrying the HTTP status it maps to.

Every error is written for the person who reads it: the API client, the operator at the CLI.
One exception handler (``concierge.gateway.errors``) turns them into responses; on ``/v1`` in
OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``. Nothing else reaches a
client: an unexpected exception becomes a 500 with a generic message and is logged server-side.

    ConciergeError                      500  server_error
    ├── ConfigError                          (start-up only: a bad setting; never an HTTP reply)
    ├── InvalidRequest                  400  invalid_request_error
    │   ├── ContextLengthExceeded       400  invalid_request_error / context_length_exceeded
    │   └── InvalidDocument             400  invalid_request_error / invalid_document
    │       ├── UnsupportedDocumentType 415  invalid_request_error / unsupported_document_type
    │       └── DocumentTooLarge        413  invalid_request_error / document_too_large
    ├── AuthenticationFailed            401  authentication_error / invalid_api_key
    │   └── SignatureInvalid            401  authentication_error / invalid_signature (webhooks)
    ├── PermissionDenied                403  permission_error
    ├── NotFound                        404  not_found_error
    │   └── ModelNotFound               404  not_found_error / model_not_found
    ├── Conflict                        409  conflict_error
    ├── PreconditionFailed              412  conflict_error / version_mismatch (If-Match)
    ├── PayloadTooLarge                 413  invalid_request_error / payload_too_large
    ├── RateLimited                     429  rate_limit_error (carries Retry-After)
    │   └── QuotaExceeded               429  insufficient_quota
    ├── UpstreamError                   502  upstream_error
    │   └── UpstreamTimeout             504  upstream_error / timeout
    └── ServiceUnavailable              503  service_unavailable
"""

from __future__ import annotations


class ConciergeError(Exception):
    """Base class: an error with an HTTP status and a message safe to show to a client."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = headers or {}

    def to_dict(self) -> dict[str, object]:
        """The OpenAI error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(ConciergeError):
    """A setting has a bad value or the configuration file cannot be read."""


class InvalidRequest(ConciergeError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class InvalidDocument(InvalidRequest):
    """A document that cannot be ingested (corrupt, empty, not UTF-8, ...)."""

    code = "invalid_document"


class UnsupportedDocumentType(InvalidDocument):
    status = 415
    code = "unsupported_document_type"


class DocumentTooLarge(InvalidDocument):
    status = 413
    code = "document_too_large"


class AuthenticationFailed(ConciergeError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class SignatureInvalid(AuthenticationFailed):
    """A webhook whose signature (or secret token) is missing or does not match."""

    code = "invalid_signature"


class PermissionDenied(ConciergeError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class NotFound(ConciergeError):
    status = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(ConciergeError):
    status = 409
    type = "conflict_error"


class PreconditionFailed(ConciergeError):
    """``If-Match`` named a version that is no longer the current one: someone else changed
    the object since the caller read it."""

    status = 412
    type = "conflict_error"
    code = "version_mismatch"


class PayloadTooLarge(ConciergeError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(ConciergeError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class QuotaExceeded(RateLimited):
    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamError(ConciergeError):
    status = 502
    type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "timeout"


class ServiceUnavailable(ConciergeError):
    status = 503
    type = "service_unavailable"
