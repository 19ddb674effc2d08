"""Who may feed the knowledge base: administrators and model owners."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from governance.permissions import user_has_role
from governance.roles import Role

KNOWLEDGE_MANAGER_ROLES = frozenset({Role.ADMINISTRATOR, Role.MODEL_OWNER})


def can_manage_knowledge(user) -> bool:
    return bool(getattr(user, "is_staff", False)) and user_has_role(user, KNOWLEDGE_MANAGER_ROLES)


class CanManageKnowledge(BasePermission):
    message = "Only administrators and model owners may upload knowledge."

    def has_permission(self, request, view) -> bool:
        return can_manage_knowledge(request.user)
