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
