"""Loads the fictional company's demo: knowledge, actions, intents, teams and one login per role.

Idempotent: running it again changes only what differs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from guardian.shortcuts import assign_perm

from convo.demo.canned import load_canned_responses
from convo.models import Intent, IntentExample, IntentKind
from governance.roles import Role
from governance.services import audit_event_record
from integrations.models import ActionDefinition, Connector
from knowledge import curated
from knowledge.embeddings import embed_texts
from knowledge.models import Audience, Collection
from knowledge.permissions import Action, collection_access_grant
from knowledge.services import collection_ensure, document_ingest_markdown
from review.services import team_default

DEMO_DIR = Path(__file__).resolve().parent
CURATED_COLLECTION = curated.DEFAULT_COLLECTION
SMALLTALK_REPLIES = {
    "greeting": ("Hello! I can answer questions about delivery, returns and refunds, check an order, "
                 "or bring in a person from our team. What can I do for you?"),
    "goodbye_thanks": "You're welcome! If anything else comes up, just write here.",
}
INTENT_KINDS = {"human_handoff": IntentKind.HANDOFF}


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: str
    first_name: str


DEMO_USERS = [
    DemoUser("agent", "tandem-agent", Role.AGENT, "Alex"),
    DemoUser("agent2", "tandem-agent2", Role.AGENT, "Sam"),
    DemoUser("supervisor", "tandem-supervisor", Role.SUPERVISOR, "Robin"),
    DemoUser("compliance", "tandem-compliance", Role.COMPLIANCE, "Casey"),
    DemoUser("modelowner", "tandem-modelowner", Role.MODEL_OWNER, "Morgan"),
    # A second model owner: approving a version takes someone other than its author.
    DemoUser("modelowner2", "tandem-modelowner2", Role.MODEL_OWNER, "Jordan"),
    DemoUser("admin", "tandem-admin", Role.ADMINISTRATOR, "Ada"),
]


CONCISE_MODEL = "offline-concise"


def _load_catalogue() -> dict:
    return json.loads((DEMO_DIR / "actions.json").read_text())


def load_knowledge(stdout=None) -> int:
    customer = collection_ensure(name="Help centre", audience=Audience.CUSTOMER,
                                 description="Articles customers can read; the assistant answers from these.")
    internal = collection_ensure(name="Agent playbooks", audience=Audience.INTERNAL,
                                 description="Internal guidance for agents; never shown to customers.")
    # Filled from the back office: answers agents write to customer questions (knowledge.curated).
    collection_ensure(name=CURATED_COLLECTION, audience=Audience.CUSTOMER,
                      description="Answers agents wrote to customer questions; the assistant answers those "
                                  "questions with them.")
    changed = 0
    for path in sorted((DEMO_DIR / "articles").glob("*.md")):
        body = path.read_text()
        internal_only = re.search(r"<!--\s*audience:\s*internal\s*-->", body) is not None
        collection = internal if internal_only else customer
        url = "" if internal_only else f"/help/{path.stem}/"
        _, did_change = document_ingest_markdown(collection=collection, slug=path.stem, body=body, url=url)
        changed += int(did_change)
        if stdout and did_change:
            stdout.write(f"  ingested {path.stem}")
    return changed


# Who may do what on each demo collection (administrators may do everything anyway). The
# supervisor may edit the playbooks but not publish them: their uploads wait, unpublished, for
# the model owner, which shows the review step of the knowledge workflow. Agents write curated
# answers, which wait for a supervisor or the model owner to publish them.
DEMO_KNOWLEDGE_ACCESS: dict[str, dict[str, tuple[Action, ...]]] = {
    "Help centre": {
        Role.MODEL_OWNER: (Action.READ, Action.EDIT, Action.PUBLISH),
        Role.AGENT: (Action.READ,), Role.SUPERVISOR: (Action.READ,), Role.COMPLIANCE: (Action.READ,),
    },
    "Agent playbooks": {
        Role.MODEL_OWNER: (Action.READ, Action.EDIT, Action.PUBLISH),
        Role.SUPERVISOR: (Action.READ, Action.EDIT),
        Role.AGENT: (Action.READ,), Role.COMPLIANCE: (Action.READ,),
    },
    CURATED_COLLECTION: {
        Role.MODEL_OWNER: (Action.READ, Action.EDIT, Action.PUBLISH),
        Role.SUPERVISOR: (Action.READ, Action.EDIT, Action.PUBLISH),
        Role.AGENT: (Action.READ, Action.EDIT), Role.COMPLIANCE: (Action.READ,),
    },
}


def grant_knowledge_access() -> None:
    """Give the role groups their access to the demo collections; only what is missing is
    added (and audited), so running the demo again changes nothing."""
    groups = {g.name: g for g in Group.objects.filter(name__in=Role.values)}
    for collection in Collection.objects.filter(name__in=DEMO_KNOWLEDGE_ACCESS).order_by("name"):
        for role, actions in DEMO_KNOWLEDGE_ACCESS[collection.name].items():
            collection_access_grant(actor="demo loader", collection=collection, grantee=groups[role],
                                    actions=actions)


def load_actions(catalogue: dict) -> None:
    for spec in catalogue["connectors"]:
        Connector.objects.update_or_create(
            name=spec["name"],
            defaults={"base_url": spec.get("default_base_url", ""), "base_url_env": spec.get("base_url_env", ""),
                      "auth": spec.get("auth", "none"), "secret_env": spec.get("secret_env", ""),
                      "timeout_s": spec.get("timeout_s", 5)},
        )
    for spec in catalogue["actions"]:
        ActionDefinition.objects.update_or_create(
            name=spec["name"],
            defaults={
                "title": spec["title"], "description": spec["description"],
                "connector": Connector.objects.get(name=spec["connector"]), "method": spec["method"],
                "path": spec["path"], "parameters_schema": spec["parameters"], "risk_level": spec["risk"],
                "approval_rule": spec["approval"], "examples": spec["examples"], "ask": spec.get("ask", {}),
                "result_template": spec.get("result_template", ""),
            },
        )
    # Compensations name other actions: set once every action exists.
    for spec in catalogue["actions"]:
        if spec.get("compensation"):
            ActionDefinition.objects.filter(name=spec["name"]).update(
                compensation_action=ActionDefinition.objects.get(name=spec["compensation"]["action"]),
                compensation_params=spec["compensation"]["params"])


def load_intents(catalogue: dict) -> None:
    wanted: list[tuple[str, str, str, str, list[str]]] = []
    for spec in catalogue["actions"]:
        wanted.append((spec["name"], IntentKind.ACTION, spec["name"], "", spec["examples"]))
    for spec in catalogue["intents"]:
        kind = INTENT_KINDS.get(spec["name"], IntentKind.SMALLTALK)
        wanted.append((spec["name"], kind, "", SMALLTALK_REPLIES.get(spec["name"], ""), spec["examples"]))
    for name, kind, action_name, reply, examples in wanted:
        intent, _ = Intent.objects.update_or_create(name=name, defaults={"kind": kind, "action_name": action_name,
                                                                         "reply": reply})
        existing = set(intent.examples.values_list("text", flat=True))
        new = [e for e in examples if e not in existing]
        intent.examples.exclude(text__in=examples).delete()
        if new:
            IntentExample.objects.bulk_create(
                [IntentExample(intent=intent, text=t, embedding=v) for t, v in zip(new, embed_texts(new))]
            )


def load_people() -> list[DemoUser]:
    User = get_user_model()
    team = team_default()
    for demo in DEMO_USERS:
        user, created = User.objects.get_or_create(username=demo.username, defaults={"first_name": demo.first_name})
        if created:
            user.set_password(demo.password)
        user.is_staff = True
        user.is_superuser = demo.role == Role.ADMINISTRATOR
        user.email = f"{demo.username}@brightwater.example"
        user.save()
        user.groups.add(Group.objects.get(name=demo.role))
        # Team membership is an object permission on the team (review.permissions).
        if demo.role == Role.AGENT:
            assign_perm("review.work_team", user, team)
        elif demo.role == Role.SUPERVISOR:
            assign_perm("review.supervise_team", user, team)
    return DEMO_USERS


def load_versions() -> None:
    """The configured runtime as the active version, and a concise variant of it written by the
    model owner and waiting for approval (evaluate it, then approve it as the second owner)."""
    from django.contrib.auth import get_user_model

    from convo.providers import provider_for_settings
    from governance import lifecycle
    from governance.models import ModelVersion
    from governance.routing import assistant_routing

    assistant_routing(runtime=provider_for_settings())
    if ModelVersion.objects.filter(name=CONCISE_MODEL).exists():
        return
    owner = get_user_model().objects.get(username="modelowner")
    candidate = lifecycle.model_version_create(
        actor=owner, name=CONCISE_MODEL, provider="offline", model_name="extractive-v1",
        parameters={"max_sentences": 1, "min_score": 0.35}, risk_level="low",
        description="One sentence per answer: customers on mobile asked for shorter replies.",
        intended_use="Answer Brightwater customers' questions about orders, delivery, returns and their account "
                     "from the published help centre, citing the article used.",
        limitations="Extractive: replies only with sentences found in the retrieved articles, so it cannot combine "
                    "facts from several articles or explain in its own words. English only. A single sentence "
                    "may leave out conditions stated in the next one.",
    )
    lifecycle.version_submit(actor=owner, version=candidate)


def load_demo(stdout=None) -> dict:
    catalogue = _load_catalogue()
    changed = load_knowledge(stdout)
    with transaction.atomic():
        load_actions(catalogue)
        load_intents(catalogue)
        users = load_people()
        load_canned_responses()
        grant_knowledge_access()
        load_versions()
        audit_event_record(action="demo.loaded", data={"documents_changed": changed})
    return {"documents_changed": changed, "users": users}
