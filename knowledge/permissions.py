"""Who may read, edit and publish each knowledge collection (django-guardian object permissions).

Three actions, each one object permission on a ``Collection``, granted to role groups or
users on the collection's "Access" page in the admin (guardian's object permissions):

- read (``knowledge.view_collection``): see the collection, its documents and ingestion jobs in
  the admin and the API, and search it on the back-office knowledge search page;
- edit (``knowledge.change_collection``): upload files, change the description and chunking.
  Someone who may edit but not publish uploads unpublished documents and cannot change live ones;
- publish (``knowledge.publish_collection``): publish and unpublish documents, change the audience.

Decisions:

- Model-level ("global") permissions grant no collection. Role groups hold
  ``knowledge.view_collection`` and friends globally so that the admin shows them its Knowledge
  section, but which collections they may open comes only from object permissions: otherwise
  every agent would read every internal collection the moment it was created.
- Superusers and members of the Administrator role may do everything on every collection.
  They are the ones who grant access, so they must see every collection (a collection nobody
  could read could not be shared again), and the role already holds every permission.
- Only they manage access and delete collections; whoever creates a collection in the admin
  gets all three actions on it.
- None of this decides what customers see: the assistant answers from every published document
  of the customer-visible collections, whatever the staff permissions.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Value
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm
from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

from governance.permissions import user_roles
from governance.roles import Role
from governance.services import audit_event_record
from knowledge.models import Collection, Document, IngestionJob


class Action(StrEnum):
    READ = "read"
    EDIT = "edit"
    PUBLISH = "publish"


CODENAMES: dict[Action, str] = {
    Action.READ: "view_collection",
    Action.EDIT: "change_collection",
    Action.PUBLISH: "publish_collection",
}
ACTION_OF_CODENAME = {codename: action for action, codename in CODENAMES.items()}
ACTION_LABELS: dict[Action, str] = {
    Action.READ: "Read — see its documents and jobs, search it",
    Action.EDIT: "Edit — upload files, change description and chunking",
    Action.PUBLISH: "Publish — make documents live or take them down, change the audience",
}
ALL_ACTIONS = frozenset(Action)


def _active(user) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.is_active)


def is_knowledge_admin(user) -> bool:
    """Superusers and administrators: every action on every collection, and managing access."""
    return _active(user) and (user.is_superuser or Role.ADMINISTRATOR in user_roles(user))


def can_manage_access(user) -> bool:
    return is_knowledge_admin(user)


def collections_for(user, action: Action | str) -> QuerySet[Collection]:
    """The collections ``user`` may act on, as one lazy queryset (usable as a subquery)."""
    action = Action(action)
    if not _active(user):
        return Collection.objects.none()
    if is_knowledge_admin(user):
        return Collection.objects.all()
    # accept_global_perms=False: the role groups' model-level permissions open the admin
    # section only (see the module docstring).
    return get_objects_for_user(user, f"knowledge.{CODENAMES[action]}", klass=Collection,
                                accept_global_perms=False)


def actions_on(user, collection: Collection) -> frozenset[Action]:
    """Everything ``user`` may do on ``collection``, in one query, remembered on the instance
    (an admin page asks several times; instances live for one request)."""
    if not _active(user):
        return frozenset()
    cache = collection.__dict__.setdefault("_tandem_actions", {})
    if user.pk not in cache:
        if is_knowledge_admin(user):
            cache[user.pk] = ALL_ACTIONS
        else:
            content_type = ContentType.objects.get_for_model(Collection)
            where = {"content_type": content_type, "object_pk": str(collection.pk),
                     "permission__codename__in": list(CODENAMES.values())}
            own = get_user_obj_perms_model(Collection).objects.filter(user=user, **where)
            via_groups = get_group_obj_perms_model(Collection).objects.filter(group__user=user, **where)
            codenames = own.values_list("permission__codename", flat=True).union(
                via_groups.values_list("permission__codename", flat=True))
            cache[user.pk] = frozenset(ACTION_OF_CODENAME[c] for c in codenames)
    return cache[user.pk]


def can(user, action: Action | str, collection: Collection) -> bool:
    return Action(action) in actions_on(user, collection)


def collections_with_access(user, queryset: QuerySet[Collection] | None = None) -> QuerySet[Collection]:
    """Readable collections annotated with ``may_edit`` and ``may_publish`` (one query, no N+1)."""
    queryset = Collection.objects.all() if queryset is None else queryset
    readable = queryset.filter(pk__in=collections_for(user, Action.READ).values("pk"))
    if is_knowledge_admin(user):
        return readable.annotate(may_edit=Value(True), may_publish=Value(True))
    return readable.annotate(
        may_edit=Exists(collections_for(user, Action.EDIT).filter(pk=OuterRef("pk"))),
        may_publish=Exists(collections_for(user, Action.PUBLISH).filter(pk=OuterRef("pk"))),
    )


def access_of(collection: Collection) -> list[str]:
    """The actions of a collection from ``collections_with_access``, for display and the API."""
    return [Action.READ.value, *([Action.EDIT.value] if collection.may_edit else []),
            *([Action.PUBLISH.value] if collection.may_publish else [])]


# --- fetching by an id from a request ---------------------------------------------------------
#
# An object the user may not read is answered exactly like an unknown id (DoesNotExist: a 404),
# so ids do not reveal what exists; one they may read but not act on raises PermissionDenied
# (a 403 with the reason).

_DENIED = {
    Action.READ: "You may not read this collection.",
    Action.EDIT: "You may read this collection but not edit it (upload files, change its settings).",
    Action.PUBLISH: "You may not publish in this collection.",
}


def _require(user, action: Action, collection: Collection, not_found: type[Exception]) -> None:
    actions = actions_on(user, collection)
    if Action.READ not in actions:
        raise not_found
    if action not in actions:
        raise PermissionDenied(_DENIED[action])


def _get(queryset: QuerySet, pk):
    try:
        return queryset.get(pk=pk)
    except (ValidationError, ValueError):
        raise queryset.model.DoesNotExist from None


def collection_get_for_user(*, user, collection_id, action: Action | str = Action.READ) -> Collection:
    collection = _get(Collection.objects.all(), collection_id)
    _require(user, Action(action), collection, Collection.DoesNotExist)
    return collection


def document_get_for_user(*, user, document_id, action: Action | str = Action.READ) -> Document:
    document = _get(Document.objects.select_related("collection"), document_id)
    _require(user, Action(action), document.collection, Document.DoesNotExist)
    return document


def ingestion_job_get_for_user(*, user, job_id, action: Action | str = Action.READ) -> IngestionJob:
    job = _get(IngestionJob.objects.select_related("collection"), job_id)
    _require(user, Action(action), job.collection, IngestionJob.DoesNotExist)
    return job


# --- granting ---------------------------------------------------------------------------------

def _grantee_label(grantee) -> dict:
    if isinstance(grantee, Group):
        return {"group": grantee.name}
    return {"user": grantee.get_username()}


def _current(grantee, collection: Collection) -> set[Action]:
    where = {"content_type": ContentType.objects.get_for_model(Collection), "object_pk": str(collection.pk),
             "permission__codename__in": list(CODENAMES.values())}
    if isinstance(grantee, Group):
        rows = get_group_obj_perms_model(Collection).objects.filter(group=grantee, **where)
    else:
        rows = get_user_obj_perms_model(Collection).objects.filter(user=grantee, **where)
    return {ACTION_OF_CODENAME[c] for c in rows.values_list("permission__codename", flat=True)}


def collection_access_set(*, actor, collection: Collection, grantee, actions: Iterable[Action | str],
                          only_add: bool = False) -> tuple[set[Action], set[Action]]:
    """Give a user or group exactly ``actions`` on the collection (or add them, ``only_add``).

    Read comes with edit and publish: nobody edits what they cannot see. Records an audit event
    when something changed. Returns (added, removed)."""
    wanted = {Action(a) for a in actions}
    if wanted:
        wanted.add(Action.READ)
    with transaction.atomic():
        current = _current(grantee, collection)
        added = wanted - current
        removed = set() if only_add else current - wanted
        for action in sorted(added):
            assign_perm(CODENAMES[action], grantee, collection)
        for action in sorted(removed):
            remove_perm(CODENAMES[action], grantee, collection)
        if added or removed:
            audit_event_record(actor=actor, action="knowledge.collection_access_changed", target=collection,
                               data={**_grantee_label(grantee), "added": sorted(added), "removed": sorted(removed)})
    return added, removed


def collection_access_grant(*, actor, collection: Collection, grantee, actions: Iterable[Action | str]
                            ) -> set[Action]:
    """Add ``actions`` (idempotent: nothing is recorded when the grantee already has them)."""
    added, _ = collection_access_set(actor=actor, collection=collection, grantee=grantee, actions=actions,
                                     only_add=True)
    return added
