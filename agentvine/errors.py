"""Domain errors raised by services and mapped to HTTP by the API layer."""


class DomainError(Exception):
    """Base class: an operation that cannot be done in the current state."""

    http_status = 400
    code = "invalid"

    def __init__(self, message, *, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationFailed(DomainError):
    http_status = 400
    code = "invalid"


class NotFound(DomainError):
    http_status = 404
    code = "not_found"


class IllegalTransition(DomainError):
    """A compare-and-set found the row in a state that forbids the change."""

    http_status = 409
    code = "illegal_transition"


class PermissionDenied(DomainError):
    http_status = 403
    code = "forbidden"


class ExecutionFenced(IllegalTransition):
    """A write named a run (execution) that is no longer the live one: its
    work order was requeued, and maybe runs elsewhere. The writer must stop
    its agent and touch nothing more of that run."""

    code = "fenced"
