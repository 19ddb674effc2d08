"""django-auditlog records who changed which field of what in the admin; secrets never reach it."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry

pytestmark = pytest.mark.django_db


def test_an_admin_edit_is_logged_with_actor_and_field_changes(client, users):
    from convo.models import CannedResponse

    canned = CannedResponse.objects.first()
    client.force_login(users["admin"])
    page = client.get(f"/admin/convo/cannedresponse/{canned.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data["title"] = "Where is my parcel (edited)"
    response = client.post(f"/admin/convo/cannedresponse/{canned.pk}/change/", data)
    assert response.status_code == 302, response.content[:400]
    entry = LogEntry.objects.get_for_object(canned).filter(action=LogEntry.Action.UPDATE).latest("timestamp")
    assert entry.actor == users["admin"]
    assert entry.changes_dict["title"][1] == "Where is my parcel (edited)"


def test_connector_secrets_are_not_copied_into_the_change_log(users):
    from integrations.models import Connector

    connector = Connector.objects.first()
    connector.secret_encrypted = "gAAAA-not-a-real-token"
    connector.username = "svc-tandem"
    connector.save()
    entry = LogEntry.objects.get_for_object(connector).filter(action=LogEntry.Action.UPDATE).latest("timestamp")
    assert entry.changes_dict["username"][1] == "svc-tandem"
    assert "secret_encrypted" not in entry.changes_dict and "gAAAA" not in str(entry.changes)
