"""JSON shapes of the governance API (plain dicts: the API reads and calls lifecycle services),
and the checks of what a request may send."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django.urls import reverse

from governance.forms_versions import (
    ENV_RE,
    endpoint_problem,
    name_problem,
    parameters_problems,
    tools_problem,
)
from governance.lifecycle import template_placeholders, template_problems
from governance.models import Deployment, EvaluationRun, ModelVersion, Provider, RiskLevel, VersionEvent
from governance.views_versions import evaluation_url

MODEL_FIELDS = ("description", "provider", "model_name", "endpoint", "api_key_env", "parameters", "cost_per_1k_input",
                "cost_per_1k_output", "risk_level", "intended_use", "limitations")
PROMPT_FIELDS = ("description", "template", "variables", "tools")


class BadRequest(Exception):
    """A request the API cannot read; the message says what to send instead, ``errors`` per field."""

    def __init__(self, message: str, *, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.errors = errors or {}


def _iso(value):
    return value.isoformat() if value else None


def _person(user) -> str | None:
    return user.get_username() if user is not None else None


def _ref(version) -> dict | None:
    if version is None:
        return None
    return {"id": str(version.pk), "label": version.label, "status": version.status}


def version_as_dict(version) -> dict:
    """A version from ``version_list``/``version_get_for_user`` (people joined: no query here)."""
    kind = version.kind
    data = {
        "id": str(version.pk), "kind": kind, "name": version.name, "version": version.version,
        "label": version.label, "status": version.status, "status_label": version.get_status_display(),
        "description": version.description,
        "created_by": _person(version.created_by), "created_at": _iso(version.created_at),
        "updated_at": _iso(version.updated_at), "submitted_at": _iso(version.submitted_at),
        "approved_by": _person(version.approved_by), "approved_at": _iso(version.approved_at),
        "content_hash": version.content_hash or None,
        "url": reverse("governance:versions_detail", args=[kind, version.pk]),
        "documentation_url": reverse("governance:versions_documentation", args=[kind, version.pk]),
    }
    if kind == "model":
        data |= {"provider": version.provider, "model_name": version.model_name, "endpoint": version.endpoint,
                 "api_key_env": version.api_key_env, "parameters": version.parameters,
                 "cost_per_1k_input": str(version.cost_per_1k_input),
                 "cost_per_1k_output": str(version.cost_per_1k_output), "risk_level": version.risk_level,
                 "intended_use": version.intended_use, "limitations": version.limitations}
    else:
        data |= {"template": version.template, "variables": version.variables, "tools": version.tools}
    return data


def event_as_dict(event: VersionEvent) -> dict:
    return {"kind": event.kind, "from_status": event.from_status or None, "to_status": event.to_status or None,
            "actor": _person(event.actor), "reason": event.reason, "data": event.data,
            "evidence": [str(run.pk) for run in event.evidence.all()], "created_at": _iso(event.created_at)}


def run_as_dict(run: EvaluationRun) -> dict:
    return {"id": str(run.pk), "kind": run.kind, "status": run.status, "total": run.total, "done": run.done,
            "summary": run.summary, "finished_at": _iso(run.finished_at), "url": evaluation_url(run.pk)}


def deployment_as_dict(deployment: Deployment) -> dict:
    """A deployment from ``deployment_list`` (pair and people joined: no query here)."""
    return {
        "id": str(deployment.pk), "assistant": deployment.assistant.name, "role": deployment.role,
        "role_label": deployment.get_role_display(), "live": deployment.ended_at is None,
        "model_version": _ref(deployment.model_version), "prompt_version": _ref(deployment.prompt_version),
        "traffic_percent": deployment.traffic_percent, "reason": deployment.reason,
        "from_configuration": deployment.from_configuration,
        "started_by": _person(deployment.started_by), "started_at": _iso(deployment.created_at),
        "ended_by": _person(deployment.ended_by), "ended_at": _iso(deployment.ended_at),
    }


# --- what requests send -----------------------------------------------------------------------

def body_dict(data) -> dict:
    """The JSON object of a request body; an empty body is an empty object."""
    if data is None or data == "":
        return {}
    if hasattr(data, "dict") and not isinstance(data, dict):  # an empty QueryDict
        data = data.dict()
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return data


def _unknown(body: dict, allowed) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"Unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"send only {', '.join(allowed)}.")


def _raise(errors: dict[str, str]) -> None:
    if errors:
        raise BadRequest("Check the fields: " + " ".join(f"{k}: {v}" for k, v in errors.items()), errors=errors)


def _text(body: dict, name: str, errors: dict, *, max_length: int | None = None) -> None:
    if name in body:
        value = body[name]
        if not isinstance(value, str):
            errors[name] = "must be a string."
        elif max_length and len(value) > max_length:
            errors[name] = f"at most {max_length} characters."
        else:
            body[name] = value.strip() if name != "template" else value


def model_fields_parse(data, *, current: ModelVersion | None = None) -> dict[str, Any]:
    """The fields of a new model version (``name`` and ``provider`` and ``model_name`` required),
    or of a draft's PATCH (``current``: any subset, checked against the merged result)."""
    body = dict(body_dict(data))
    allowed = MODEL_FIELDS if current else ("name", *MODEL_FIELDS)
    _unknown(body, allowed)
    errors: dict[str, str] = {}
    for name, length in (("name", 120), ("description", None), ("provider", None), ("model_name", 200),
                         ("endpoint", 500), ("api_key_env", 80), ("risk_level", None), ("intended_use", None),
                         ("limitations", None)):
        _text(body, name, errors, max_length=length)
    if current is None:
        for name in ("name", "provider", "model_name"):
            if not body.get(name) and name not in errors:
                errors[name] = "is required."
        if "name" not in errors and (problem := name_problem(body["name"])):
            errors["name"] = problem
    elif "model_name" in body and not body["model_name"] and "model_name" not in errors:
        errors["model_name"] = "cannot be empty."
    if "provider" in body and "provider" not in errors and body["provider"] not in Provider.values:
        errors["provider"] = f"one of {', '.join(Provider.values)}."
    if "risk_level" in body and "risk_level" not in errors and body["risk_level"] not in RiskLevel.values:
        errors["risk_level"] = f"one of {', '.join(RiskLevel.values)}."
    if "endpoint" in body and "endpoint" not in errors and (problem := endpoint_problem(body["endpoint"])):
        errors["endpoint"] = problem
    if body.get("api_key_env") and "api_key_env" not in errors and not ENV_RE.match(body["api_key_env"]):
        errors["api_key_env"] = "an environment variable name: capital letters, digits and underscores."
    for name in ("cost_per_1k_input", "cost_per_1k_output"):
        if name in body:
            value = body[name]
            try:
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise InvalidOperation
                amount = Decimal(str(value))
                if not amount.is_finite() or amount < 0 or amount >= 10_000 or -amount.as_tuple().exponent > 6:
                    raise InvalidOperation
                body[name] = amount
            except InvalidOperation:
                errors[name] = "a number of at most 6 decimals, 0 or more (below 10000)."
    merged = {name: getattr(current, name) for name in MODEL_FIELDS} if current else {}
    merged |= {k: v for k, v in body.items() if k not in errors}
    provider = merged.get("provider")
    if "parameters" in body or "provider" in body:
        problems = parameters_problems(provider, merged.get("parameters", {})) if provider in Provider.values else []
        if problems:
            errors["parameters"] = " ".join(problems)
    if provider == Provider.OPENAI and not merged.get("endpoint") and "endpoint" not in errors:
        errors["endpoint"] = "an OpenAI-compatible model needs its endpoint (base URL)."
    _raise(errors)
    return body


def prompt_fields_parse(data, *, current=None) -> dict[str, Any]:
    """The fields of a new prompt version (``name`` and ``template`` required; ``variables``
    default to the template's placeholders; ``tools`` null for every enabled action, a list for
    those), or of a draft's PATCH (``current``)."""
    body = dict(body_dict(data))
    allowed = PROMPT_FIELDS if current else ("name", *PROMPT_FIELDS)
    _unknown(body, allowed)
    errors: dict[str, str] = {}
    for name, length in (("name", 120), ("description", None), ("template", None)):
        _text(body, name, errors, max_length=length)
    if current is None:
        for name in ("name", "template"):
            if not body.get(name) and name not in errors:
                errors[name] = "is required."
        if "name" not in errors and (problem := name_problem(body["name"])):
            errors["name"] = problem
    if "template" in body and "template" not in errors and (problems := template_problems(body["template"])):
        errors["template"] = " ".join(problems)
    template = body.get("template", current.template if current else "")
    if "variables" in body:
        variables = body["variables"]
        if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
            errors["variables"] = "a list of placeholder names."
        elif missing := [v for v in variables if f"{{{v}}}" not in template]:
            errors["variables"] = f"not in the template: {', '.join(missing)}."
    elif "template" in body and "template" not in errors:
        body["variables"] = template_placeholders(template)
    if "tools" in body and (problem := tools_problem(body["tools"])):
        errors["tools"] = problem
    _raise(errors)
    return body


def reason_parse(data) -> str:
    reason = body_dict(data).get("reason", "")
    if not isinstance(reason, str):
        raise BadRequest("reason must be a string.")
    return reason


def evidence_parse(data) -> list[uuid.UUID]:
    """``evidence``: the ids of finished evaluation runs of the version (the service checks which)."""
    evidence = body_dict(data).get("evidence", [])
    message = "evidence must be a list of evaluation run ids."
    if not isinstance(evidence, list) or not all(isinstance(run_id, str) for run_id in evidence):
        raise BadRequest(message)
    try:
        return [uuid.UUID(run_id) for run_id in evidence]
    except ValueError:
        raise BadRequest(message) from None


def id_parse(data, name: str) -> uuid.UUID:
    value = body_dict(data).get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} is required: the id of a {name.replace('_', ' ')}.")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{name} must be the id of a {name.replace('_', ' ')}.") from None


def percent_parse(data) -> int:
    percent = body_dict(data).get("percent")
    if isinstance(percent, bool) or not isinstance(percent, int):
        raise BadRequest("percent is required: a whole number from 1 to 99.")
    return percent
