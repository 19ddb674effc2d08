"""Role groups and what each role may do in the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from governance.roles import Role

pytestmark = pytest.mark.django_db


def test_every_role_exists_as_a_group():
    assert set(Group.objects.values_list("name", flat=True)) >= set(Role.values)


@pytest.mark.parametrize(
    ("username", "url", "status"),
    [
        ("compliance", "/admin/governance/auditevent/", 200),
        ("compliance", "/admin/convo/turn/", 200),
        ("agent", "/admin/governance/auditevent/", 403),
        ("agent", "/admin/knowledge/document/", 200),
        # Versions change only through the lifecycle (/governance/): the admin shows them.
        ("modelowner", "/admin/governance/modelversion/", 200),
        ("modelowner", "/admin/governance/modelversion/add/", 403),
        ("admin", "/admin/governance/modelversion/add/", 403),
        ("compliance", "/admin/governance/modelversion/", 200),
        ("admin", "/admin/integrations/actiondefinition/", 200),
    ],
)
def test_admin_pages_follow_the_role(client, users, username, url, status):
    client.force_login(users[username])
    assert client.get(url).status_code == status


def test_nobody_can_edit_or_delete_audit_rows_in_the_admin(client, users, say):
    turn = say("How long does delivery within Germany take?")
    from governance.models import AuditEvent

    event = AuditEvent.objects.get(action="ai.turn", target_id=str(turn.pk))
    client.force_login(users["admin"])
    response = client.post(f"/admin/governance/auditevent/{event.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()
