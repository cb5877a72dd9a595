"""How a request fails while its stream is read: a short stable error type and the detail."""

from __future__ import annotations

MESSAGE_LIMIT = 500  # characters of a server's message kept in a record


class StreamFailure(Exception):
    """The request failed; ``error_type`` is a short stable name, ``message`` the detail."""

    def __init__(self, error_type: str, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = str(error_type)  # an ErrorType's plain value
        self.message = message[:MESSAGE_LIMIT]
        self.retry_after_s = retry_after_s  # set when the server said the request may be retried
