class ReviewError(Exception):
    """A review action that cannot be done; the message is shown to the person."""


class ItemAlreadyClaimed(ReviewError):
    pass


class ItemClosed(ReviewError):
    pass
