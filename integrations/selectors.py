"""Reads of the integrations app. Which runs a user may see is decided by the app that owns
their subject (convo for conversations); these helpers only shape the querysets."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from integrations.models import ActionApproval, ActionRun

# With this prefetched, ActionRun.approvals_given / approvals_missing / approval_progress /
# approver_ids / current_approvals cost no further query (e.g. in a template loop).
APPROVALS_PREFETCH = Prefetch("approvals", queryset=ActionApproval.objects.select_related("approver")
                              .order_by("created_at"))


def action_runs_with_approvals(queryset: QuerySet[ActionRun] | None = None) -> QuerySet[ActionRun]:
    """Runs with their action, proposer, final approver and every approval (voided ones too)."""
    queryset = ActionRun.objects.all() if queryset is None else queryset
    return queryset.select_related("action", "proposed_by", "approved_by").prefetch_related(APPROVALS_PREFETCH)


def action_run_approvals(*, run: ActionRun) -> list[ActionApproval]:
    """A run's approval history, oldest first, voided ones included (``voided_at`` set)."""
    return list(run.approvals.select_related("approver").order_by("created_at"))
