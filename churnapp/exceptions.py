"""The business errors of the whole project; one DRF handler maps them to HTTP."""


class ApplicationError(Exception):
    """A request the domain refuses. `code` is stable for clients; `details` explains."""

    status_code = 400
    code = "invalid"

    def __init__(
        self, message: str, *, details: dict | list | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class NotFoundError(ApplicationError):
    status_code = 404
    code = "not_found"


class ConflictError(ApplicationError):
    status_code = 409
    code = "conflict"


class WebhookRejected(ApplicationError):
    """A webhook that failed verification; nothing of it is stored."""

    status_code = 401
    code = "webhook_rejected"


class ForbiddenError(ApplicationError):
    status_code = 403
    code = "forbidden"


class ServiceMisconfigured(ApplicationError):
    """Our side lacks configuration to answer (e.g. no webhook public key)."""

    status_code = 503
    code = "not_configured"


class PayloadTooLargeError(ApplicationError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ApplicationError):
    status_code = 415
    code = "unsupported_media_type"


def content_type_require(content_type: str, *accepted: str) -> None:
    """UnsupportedMediaTypeError unless the request's media type is one of `accepted`."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in accepted:
        raise UnsupportedMediaTypeError(
            f"Unsupported Content-Type {media_type or '(none)'!r}; send {' or '.join(accepted)}.",
            details={"accepted": list(accepted)},
        )
