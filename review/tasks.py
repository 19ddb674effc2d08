"""Celery entry points of the review app (periodic, run by beat)."""

from celery import shared_task

from review.services import review_claims_release_expired


@shared_task(name="review.release_expired_claims", acks_late=True, time_limit=60)
def release_expired_claims() -> int:
    return review_claims_release_expired()
