"""Celery entry points of the review app (periodic, run by beat)."""

from celery import shared_task

from review.services import review_claims_release_expired, review_sla_breaches_escalate


@shared_task(name="review.release_expired_claims", acks_late=True, time_limit=60)
def release_expired_claims() -> int:
    return review_claims_release_expired()


@shared_task(name="review.escalate_sla_breaches", acks_late=True, time_limit=60)
def escalate_sla_breaches() -> int:
    return review_sla_breaches_escalate()
