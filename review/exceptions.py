class ReviewError(Exception):
    """A review action that cannot be done; the message is shown to the person."""


class ItemAlreadyClaimed(ReviewError):
    pass


class ItemClosed(ReviewError):
    pass


class ItemStale(ReviewError):
    """The page that sent the request showed an older state of the item."""


class ReviewNotAllowed(ReviewError):
    """The person may not change this item (not their team, or a read-only role)."""
