"""Shape checks for the Brightwater demo content: the action catalogue and help articles.

The content is loaded by code other people write (seeding, the knowledge ingester, the
intent router), so these tests pin the contract it relies on rather than the wording.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest

DEMO_DIR = Path(__file__).resolve().parents[2] / "convo" / "demo"
ACTIONS_PATH = DEMO_DIR / "actions.json"
ARTICLES = sorted((DEMO_DIR / "articles").glob("*.md"))

# Keys the demo backend returns for each action, so result templates can be filled.
# Kept here instead of imported so the content test does not depend on the backend.
RESPONSE_KEYS = {
    "order_status": {"order_id", "status", "status_label", "eta_sentence", "total", "currency", "items"},
    "refund_request": {"refund_id", "order_id", "amount", "amount_display", "currency", "status"},
    "change_address": {"order_id", "address", "order_status", "status"},
    "account_lookup": {"email", "name", "tier", "loyalty_points", "voucher_value_display"},
}


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Any]:
    with ACTIONS_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


def _actions(catalogue: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in catalogue["actions"]}


def test_catalogue_has_the_demo_connector(catalogue: dict[str, Any]) -> None:
    (connector,) = catalogue["connectors"]
    assert connector["name"] == "brightwater-backend"
    assert connector["base_url_env"] == "DEMO_BACKEND_URL"
    assert connector["auth"] == "bearer"
    assert connector["secret_env"] == "DEMO_BACKEND_TOKEN"
    assert connector["timeout_s"] > 0


def test_catalogue_lists_the_expected_actions_and_intents(catalogue: dict[str, Any]) -> None:
    assert set(_actions(catalogue)) == set(RESPONSE_KEYS)
    assert {i["name"] for i in catalogue["intents"]} == {"human_handoff", "greeting", "goodbye_thanks"}


def test_risky_actions_always_need_approval(catalogue: dict[str, Any]) -> None:
    for action in catalogue["actions"]:
        assert action["risk"] in {"low", "medium", "high"}
        assert action["approval"]["rule"] in {"never", "always"}
        if action["risk"] != "low" or action["method"] != "GET":
            assert action["approval"]["rule"] == "always", action["name"]


def test_every_action_is_complete(catalogue: dict[str, Any]) -> None:
    connectors = {c["name"] for c in catalogue["connectors"]}
    for action in catalogue["actions"]:
        name = action["name"]
        assert action["title"], name
        assert action["description"], name
        assert action["connector"] in connectors, name
        assert action["method"] in {"GET", "POST"}, name
        assert action["path"].startswith("/"), name
        schema = action["parameters"]
        assert schema["type"] == "object", name
        properties, required = schema["properties"], schema["required"]
        assert set(required) <= set(properties), name
        # Every path placeholder must be a required parameter, or the URL cannot be built.
        placeholders = set(re.findall(r"{(\w+)}", action["path"]))
        assert placeholders <= set(required), name
        # The assistant must know how to ask for anything it is missing.
        assert set(action["ask"]) == set(required), name
        for question in action["ask"].values():
            assert question.strip().endswith(("?", ".")), name
        template_fields = {f for _, f, _, _ in string.Formatter().parse(action["result_template"]) if f}
        assert template_fields <= RESPONSE_KEYS[name], name


@pytest.mark.parametrize("group", ["actions", "intents"])
def test_examples_are_varied(catalogue: dict[str, Any], group: str) -> None:
    for entry in catalogue[group]:
        examples = entry["examples"]
        assert 8 <= len(examples) <= 15, entry["name"]
        normalised = [e.strip().lower() for e in examples]
        assert all(normalised), entry["name"]
        assert len(set(normalised)) == len(normalised), entry["name"]


def test_no_example_is_shared_between_actions_and_intents(catalogue: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for entry in [*catalogue["actions"], *catalogue["intents"]]:
        for example in entry["examples"]:
            key = example.strip().lower()
            assert key not in seen, f"{example!r} is in both {seen.get(key)} and {entry['name']}"
            seen[key] = entry["name"]


def test_parameter_schemas_are_valid_json_schema(catalogue: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for action in catalogue["actions"]:
        validator_cls = jsonschema.validators.validator_for(action["parameters"])
        validator_cls.check_schema(action["parameters"])


def test_parameter_schemas_accept_and_reject_examples(catalogue: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    actions = _actions(catalogue)
    good = {
        "order_status": {"order_id": "BW-10001"},
        "refund_request": {"order_id": "BW-10003", "amount": 25.5, "reason": "Broken zip"},
        "change_address": {"order_id": "BW-10001", "address": "Lindenstraße 12, 04109 Leipzig"},
        "account_lookup": {"email": "lena.hartmann@example.com"},
    }
    bad = {
        "order_status": {"order_id": "10001"},
        "refund_request": {"order_id": "BW-10003", "amount": 0, "reason": "Broken zip"},
        "change_address": {"order_id": "BW-10001", "address": "Leipzig"},
        "account_lookup": {},
    }
    for name, params in good.items():
        jsonschema.validate(params, actions[name]["parameters"])
    for name, params in bad.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(params, actions[name]["parameters"])


def test_there_are_enough_articles() -> None:
    assert 12 <= len(ARTICLES) <= 15


@pytest.mark.parametrize("path", ARTICLES, ids=lambda p: p.stem)
def test_article_structure(path: Path) -> None:
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", path.stem), "slug must be URL-safe"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert re.fullmatch(r"# \S.*", lines[0]), "first line must be '# Title'"
    body = lines[1:]
    if body and body[0].startswith("<!--"):
        assert body[0] == "<!-- audience: internal -->"
        body = body[1:]
    sections = [i for i, line in enumerate(body) if line.startswith("## ")]
    assert len(sections) >= 2
    # No stray text before the first section and no empty sections.
    assert not any(line.strip() for line in body[: sections[0]])
    for start, end in zip(sections, [*sections[1:], len(body)], strict=True):
        assert any(line.strip() for line in body[start + 1 : end]), body[start]
    words = len(" ".join(lines).split())
    assert 150 <= words <= 400, f"{words} words"


def test_some_articles_are_internal() -> None:
    internal = [p.stem for p in ARTICLES if "<!-- audience: internal -->" in p.read_text(encoding="utf-8")]
    assert len(internal) == 2
