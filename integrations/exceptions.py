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


class ApprovalRefused(ActionStateError):
    """This person may not approve the run as asked; nothing was changed."""


class OwnProposalApproval(ApprovalRefused):
    """The person who proposed a run cannot approve it (they may still withdraw it)."""


class DuplicateApproval(ApprovalRefused):
    """The same person cannot give a run's second approval."""


class StaleParameters(ApprovalRefused):
    """The parameters were changed since the approver's page showed them."""
