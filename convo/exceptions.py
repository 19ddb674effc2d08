class ConvoError(Exception):
    """A conversation request that cannot be served; ``code`` and the message go to the client."""

    code = "invalid"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class MessageRejected(ConvoError):
    code = "message_rejected"


class ConversationClosed(ConvoError):
    code = "conversation_closed"


class RateLimited(ConvoError):
    code = "rate_limited"


class NotAllowed(ConvoError):
    code = "forbidden"


class SurveyRejected(ConvoError):
    """A satisfaction-survey answer that cannot be stored; nothing was changed."""

    code = "csat_rejected"
