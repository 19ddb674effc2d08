"""Roles are Django groups created by a data migration; customers are never staff users."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    AGENT = "agent", "Support agent"
    SUPERVISOR = "supervisor", "Supervisor"
    COMPLIANCE = "compliance_officer", "Compliance officer"
    MODEL_OWNER = "model_owner", "Model owner"
    ADMINISTRATOR = "administrator", "Administrator"


STAFF_ROLES = frozenset(Role.values)

_READ_CONVERSATIONS = [
    "convo.view_conversation", "convo.view_message", "convo.view_turn", "convo.view_contact",
    "review.view_reviewitem", "integrations.view_actionrun",
]
_READ_KNOWLEDGE = ["knowledge.view_collection", "knowledge.view_document", "knowledge.view_chunk"]
_CANNED_RESPONSES = ["convo.view_cannedresponse", "convo.add_cannedresponse", "convo.change_cannedresponse",
                     "convo.delete_cannedresponse"]

# What each role may do in the admin (the back office checks roles itself).
ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.AGENT: [*_READ_KNOWLEDGE, "convo.view_cannedresponse"],
    Role.SUPERVISOR: [*_READ_KNOWLEDGE, *_READ_CONVERSATIONS, "review.view_team", "review.change_team",
                      *_CANNED_RESPONSES],
    Role.COMPLIANCE: [
        *_READ_KNOWLEDGE, *_READ_CONVERSATIONS, "knowledge.view_embeddingspace", "governance.view_auditevent",
        "governance.view_modelversion", "governance.view_evaluationcase",
        "governance.view_promptversion", "integrations.view_actiondefinition", "integrations.view_connector",
    ],
    Role.MODEL_OWNER: [
        *_READ_KNOWLEDGE, "knowledge.add_collection", "knowledge.change_collection", "knowledge.add_document",
        "knowledge.change_document", "knowledge.view_embeddingspace", "knowledge.change_embeddingspace",
        "governance.view_modelversion", "governance.add_modelversion",
        "governance.view_promptversion", "governance.add_promptversion", "governance.view_auditevent",
        "governance.view_evaluationcase",
        "convo.view_intent", "convo.add_intent", "convo.change_intent", "convo.view_intentexample",
        "integrations.view_actiondefinition", "integrations.view_connector",
    ],
    Role.ADMINISTRATOR: ["*"],
}
_OWN_APPS = ("governance", "review", "knowledge", "integrations", "convo", "auth", "auditlog")


def ensure_role_groups(**kwargs) -> None:
    """Create the role groups and grant their admin permissions (idempotent; runs after
    every migrate, and after the flush between transactional tests)."""
    from django.contrib.auth.models import Group, Permission

    for name in Role.values:
        group, _ = Group.objects.get_or_create(name=name)
        wanted = ROLE_PERMISSIONS.get(name, [])
        if wanted == ["*"]:
            perms = Permission.objects.filter(content_type__app_label__in=_OWN_APPS)
        else:
            pairs = [p.split(".", 1) for p in wanted]
            query = models.Q(pk__in=[])
            for app_label, codename in pairs:
                query |= models.Q(content_type__app_label=app_label, codename=codename)
            perms = Permission.objects.filter(query)
        group.permissions.add(*perms)
