"""Errors of the governance app."""


class GovernanceError(Exception):
    """Base of every refusal from governance services."""


class LifecycleRefused(GovernanceError):
    """A version or deployment change that the lifecycle does not allow; the message says why
    in words a model owner can act on. Nothing was changed, and the refusal is audited."""

    def __init__(self, message: str, *, code: str = "refused"):
        super().__init__(message)
        self.code = code
