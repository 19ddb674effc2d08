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


def ensure_role_groups(**kwargs) -> None:
    from django.contrib.auth.models import Group

    for name in Role.values:
        Group.objects.get_or_create(name=name)
