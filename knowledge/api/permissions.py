"""Who may call the knowledge API at all; which collections they may touch is decided per
collection by ``knowledge.permissions`` (object permissions)."""

from __future__ import annotations

from rest_framework.permissions import BasePermission


class IsActiveStaff(BasePermission):
    """Back-office accounts only: a user whose staff access was withdrawn keeps no API access,
    whatever object permissions they still hold."""

    message = "The knowledge API is for Tandem staff."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(getattr(user, "is_authenticated", False) and user.is_active and user.is_staff)
