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
