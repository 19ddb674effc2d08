"""Who sees and works which review items: teams are django-guardian objects.

- An agent is a member of a team when they hold ``review.work_team`` on it (directly or through
  a group); they see and work that team's items and the conversations behind them.
- A supervisor holds ``review.supervise_team`` on the teams they look after: they see and work
  those teams' items, and SLA breaches of those teams reach them.
- Compliance officers read every item and change nothing; administrators do everything.

Model-level ("global") grants of these two permissions give no team: teams come only from
object permissions, as for knowledge collections, so a new team starts empty.
"""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q, QuerySet
from guardian.shortcuts import assign_perm, remove_perm
from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

from governance.permissions import can_work_conversations, user_has_role, user_roles
from governance.roles import Role
from governance.services import audit_event_record
from review.models import ReviewItem, Team

WORK = "work_team"
SUPERVISE = "supervise_team"


def sees_every_queue(user) -> bool:
    """Compliance officers (read only) and administrators see every team's items."""
    return user_has_role(user, {Role.COMPLIANCE, Role.ADMINISTRATOR})


def team_ids_for(user, *, codenames=(WORK, SUPERVISE)) -> list:
    """The ids of the teams ``user`` works or supervises (one query, remembered per request)."""
    if not user_roles(user):
        return []
    cache = user.__dict__.setdefault("_tandem_team_ids", {})
    key = tuple(sorted(codenames))
    if key not in cache:
        # By app label and model, not a cached ContentType id: the id may change under a
        # long-running process when the table is rebuilt (as between browser tests).
        where = {"content_type__app_label": "review", "content_type__model": "team",
                 "permission__codename__in": list(codenames)}
        own = get_user_obj_perms_model(Team).objects.filter(user=user, **where).values_list("object_pk", flat=True)
        via_groups = get_group_obj_perms_model(Team).objects.filter(group__user=user, **where).values_list(
            "object_pk", flat=True)
        cache[key] = sorted({pk for pk in own.union(via_groups)})
    return cache[key]


def items_visible_filter(user) -> Q | None:
    """A filter on ReviewItem for what ``user`` may see; None means everything, Q(pk__in=[])
    nothing."""
    if not user_roles(user):
        return Q(pk__in=[])
    if sees_every_queue(user):
        return None
    if not can_work_conversations(user):
        return Q(pk__in=[])
    return Q(team_id__in=team_ids_for(user))


def may_work_item(user, item: ReviewItem) -> bool:
    """Change an item: claim, release, decide. Compliance officers never may."""
    if not can_work_conversations(user):
        return False
    if user_has_role(user, {Role.ADMINISTRATOR}):
        return True
    return item.team_id is not None and str(item.team_id) in {str(t) for t in team_ids_for(user)}


def may_see_item(user, item: ReviewItem) -> bool:
    visible = items_visible_filter(user)
    if visible is None:
        return True
    return may_work_item(user, item)


def team_members(team: Team, codename: str = WORK):
    """The users holding ``codename`` on ``team`` directly (for the admin and the demo)."""
    from django.contrib.auth import get_user_model

    content_type = ContentType.objects.get_for_model(Team)
    rows = get_user_obj_perms_model(Team).objects.filter(
        content_type=content_type, object_pk=str(team.pk), permission__codename=codename)
    return get_user_model().objects.filter(pk__in=rows.values("user_id")).order_by("username")


def team_membership_set(*, actor, team: Team, user, work: bool, supervise: bool = False) -> None:
    """Make ``user`` a member (work) and/or supervisor of ``team``, or neither."""
    with transaction.atomic():
        for codename, wanted in ((WORK, work), (SUPERVISE, supervise)):
            perm = f"review.{codename}"
            if wanted:
                assign_perm(perm, user, team)
            else:
                remove_perm(perm, user, team)
        user.__dict__.pop("_tandem_team_ids", None)
        audit_event_record(actor=actor, action="review.team_membership_set", target=team,
                           data={"user": user.get_username(), "work": work, "supervise": supervise})


def teams_for(user) -> QuerySet[Team]:
    if sees_every_queue(user):
        return Team.objects.order_by("name")
    return Team.objects.filter(pk__in=team_ids_for(user)).order_by("name")
