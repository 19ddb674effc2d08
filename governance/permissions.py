"""Role checks shared by every app's views, APIs and consumers."""

from __future__ import annotations

from typing import Iterable

from governance.roles import Role


def user_roles(user) -> set[str]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    cached = getattr(user, "_tandem_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached.add(Role.ADMINISTRATOR)
        user._tandem_roles = cached
    return cached


def user_has_role(user, roles: Iterable[str]) -> bool:
    return bool(user_roles(user) & set(roles))


def can_work_conversations(user) -> bool:
    """Agents, supervisors and administrators may reply to customers and decide reviews."""
    return user_has_role(user, {Role.AGENT, Role.SUPERVISOR, Role.ADMINISTRATOR})


def can_read_conversations(user) -> bool:
    """Compliance officers read everything and change nothing."""
    return can_work_conversations(user) or user_has_role(user, {Role.COMPLIANCE})


def can_own_models(user) -> bool:
    """Model owners and administrators register, evaluate, approve and deploy versions."""
    return user_has_role(user, {Role.MODEL_OWNER, Role.ADMINISTRATOR})


def can_read_governance(user) -> bool:
    """Compliance officers read versions, evaluations and deployments too (and change nothing)."""
    return can_own_models(user) or user_has_role(user, {Role.COMPLIANCE})
