class IntegrationError(Exception):
    """An action that cannot be proposed or run; the message is safe to show."""


class InvalidParameters(IntegrationError):
    pass


class ActionStateError(IntegrationError):
    pass


class ConnectorError(IntegrationError):
    def __init__(self, message: str, *, retryable: bool, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.body = body or {}
