"""Forms of the versions pages, and the checks the pages and the API share.

The forms read what a person typed into the values the lifecycle services take; the lifecycle
rules themselves (four eyes, evidence, statuses) stay in ``governance.lifecycle`` so that every
refusal of a rule is audited there. What is checked here is the shape: JSON that parses, known
parameters of the right type, an endpoint that is a URL, placeholders the assistant fills in."""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from governance.lifecycle import template_placeholders, template_problems
from governance.models import ModelVersion, PromptVersion, Provider, RiskLevel

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,79}$")
TOOL_RE = re.compile(r"^[a-z0-9_]{1,80}$")

# Parameters each provider reads (convo.providers.provider_for_version): name -> (type, low, high, help).
PARAMETERS: dict[str, dict[str, tuple[type, float, float | None, str]]] = {
    Provider.OFFLINE: {
        "max_sentences": (int, 1, 20, "sentences in an answer"),
        "min_score": (float, 0, 1, "lowest similarity of a passage it may quote"),
    },
    Provider.OPENAI: {
        "temperature": (float, 0, 2, "sampling temperature"),
        "max_tokens": (int, 1, 32000, "longest answer in tokens"),
        "timeout_s": (float, 1, 600, "seconds before the call is abandoned"),
    },
}


def parameters_help(provider: str) -> str:
    known = PARAMETERS.get(provider, {})
    return "; ".join(f"{name} ({spec[3]})" for name, spec in known.items())


def parameters_problems(provider: str, parameters: Any) -> list[str]:
    """What is wrong with ``parameters`` for ``provider`` (empty when they are fine)."""
    if not isinstance(parameters, dict):
        return ["Parameters must be a JSON object, e.g. {\"max_sentences\": 2}."]
    known = PARAMETERS.get(provider, {})
    problems = []
    for name, value in parameters.items():
        if name not in known:
            choices = ", ".join(known) or "none"
            problems.append(f"Unknown parameter {name!r} for this provider; it reads {choices}.")
            continue
        kind, low, high, _ = known[name]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or (kind is int and not isinstance(value, int)):
            problems.append(f"{name} must be {'a whole number' if kind is int else 'a number'}.")
        elif value < low or (high is not None and value > high):
            problems.append(f"{name} must be between {low:g} and {high:g}.")
    return problems


def endpoint_problem(endpoint: str) -> str | None:
    if not endpoint:
        return None
    try:
        URLValidator(schemes=["http", "https"])(endpoint)
    except ValidationError:
        return "The endpoint must be an http(s) URL, e.g. https://api.openai.com/v1."
    return None


def tools_problem(tools: Any) -> str | None:
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, str) and TOOL_RE.match(t) for t in tools):
        return "Tools must be a list of action names (lower case letters, digits and underscores)."
    return None


def name_problem(name: str) -> str | None:
    if not NAME_RE.match(name or ""):
        return ("A name is 1 to 120 letters, digits, dots, dashes or underscores, e.g. offline-concise; "
                "versions of the same name are numbered 1, 2, 3…")
    return None


def _split_names(raw: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\n]", raw or "") if part.strip()]


# --- model versions ----------------------------------------------------------------------------

class ModelVersionForm(forms.Form):
    """Every field of a model version and its model card (new drafts and draft edits)."""

    name = forms.CharField(max_length=120, help_text="Versions of one name are numbered 1, 2, 3…")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                  help_text="What changed and why")
    provider = forms.ChoiceField(choices=Provider.choices)
    model_name = forms.CharField(max_length=200, label="Model name", help_text="e.g. gpt-4o-mini, extractive-v1")
    endpoint = forms.CharField(max_length=500, required=False, label="Endpoint (base URL)",
                               help_text="OpenAI-compatible endpoints only, e.g. https://api.openai.com/v1")
    api_key_env = forms.CharField(max_length=80, required=False, label="API key variable",
                                  help_text="Environment variable holding the key (default LLM_API_KEY); the key "
                                            "itself is never stored")
    parameters = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "class": "code"}),
                                 help_text="A JSON object")
    cost_per_1k_input = forms.DecimalField(min_value=Decimal("0"), max_digits=10, decimal_places=6,
                                           initial=Decimal("0"), label="Cost per 1,000 input tokens")
    cost_per_1k_output = forms.DecimalField(min_value=Decimal("0"), max_digits=10, decimal_places=6,
                                            initial=Decimal("0"), label="Cost per 1,000 output tokens")
    risk_level = forms.ChoiceField(choices=RiskLevel.choices, initial=RiskLevel.MEDIUM, label="Risk level")
    intended_use = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Intended use",
                                   help_text="Who it answers, about what, in which languages")
    limitations = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                  help_text="What it must not be relied on for; known failure modes")

    def __init__(self, *args, editing: bool = False, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing:
            # A version's name and number are fixed once created.
            self.fields["name"].required = False
            self.fields["name"].disabled = True

    def clean_name(self) -> str:
        name = (self.cleaned_data.get("name") or "").strip()
        if not self.editing and (problem := name_problem(name)):
            raise ValidationError(problem)
        return name

    def clean_endpoint(self) -> str:
        endpoint = self.cleaned_data.get("endpoint", "").strip()
        if problem := endpoint_problem(endpoint):
            raise ValidationError(problem)
        return endpoint

    def clean_api_key_env(self) -> str:
        value = self.cleaned_data.get("api_key_env", "").strip()
        if value and not ENV_RE.match(value):
            raise ValidationError("An environment variable name: capital letters, digits and underscores.")
        return value

    def clean_parameters(self) -> dict:
        raw = (self.cleaned_data.get("parameters") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"This is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).")
        if not isinstance(value, dict):
            raise ValidationError("Parameters must be a JSON object, e.g. {\"max_sentences\": 2}.")
        return value

    def clean(self):
        data = super().clean()
        provider = data.get("provider")
        if provider == Provider.OPENAI and not data.get("endpoint") and "endpoint" not in self.errors:
            self.add_error("endpoint", "An OpenAI-compatible model needs its endpoint (base URL).")
        if provider and "parameters" in data:
            for problem in parameters_problems(provider, data["parameters"]):
                self.add_error("parameters", problem)
        return data

    def service_fields(self) -> dict[str, Any]:
        """The content for ``model_version_create`` / ``version_update`` (name apart)."""
        data = self.cleaned_data
        return {name: data[name] for name in (
            "description", "provider", "model_name", "endpoint", "api_key_env", "parameters", "cost_per_1k_input",
            "cost_per_1k_output", "risk_level", "intended_use", "limitations")}

    @classmethod
    def initial_from(cls, version: ModelVersion) -> dict[str, Any]:
        return {"name": version.name, "description": version.description, "provider": version.provider,
                "model_name": version.model_name, "endpoint": version.endpoint, "api_key_env": version.api_key_env,
                "parameters": json.dumps(version.parameters or {}, indent=2), "cost_per_1k_input":
                version.cost_per_1k_input, "cost_per_1k_output": version.cost_per_1k_output,
                "risk_level": version.risk_level, "intended_use": version.intended_use,
                "limitations": version.limitations}


# --- prompt versions ---------------------------------------------------------------------------

class ToolsMode:
    ALL = "all"
    NONE = "none"
    LISTED = "listed"
    CHOICES = [(ALL, "Every enabled action"), (NONE, "No actions (answers only)"), (LISTED, "Only these actions")]


class PromptVersionForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="Versions of one name are numbered 1, 2, 3…")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                  help_text="What changed and why")
    template = forms.CharField(widget=forms.Textarea(attrs={"rows": 12, "class": "code"}),
                               help_text="The system prompt. {company} and {sources} are filled in for every turn; "
                                         "{sources} is required.")
    variables = forms.CharField(required=False, help_text="Placeholders the template uses, comma-separated; "
                                                           "leave empty to take them from the template")
    tools_mode = forms.ChoiceField(choices=ToolsMode.CHOICES, initial=ToolsMode.ALL, label="Tools offered",
                                   widget=forms.RadioSelect)
    tools = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "class": "code"}),
                            label="Action names", help_text="One per line or comma-separated, e.g. refund_order")

    def __init__(self, *args, editing: bool = False, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing:
            self.fields["name"].required = False
            self.fields["name"].disabled = True

    def clean_name(self) -> str:
        name = (self.cleaned_data.get("name") or "").strip()
        if not self.editing and (problem := name_problem(name)):
            raise ValidationError(problem)
        return name

    def clean_template(self) -> str:
        template = self.cleaned_data.get("template", "")
        problems = template_problems(template)
        if problems:
            raise ValidationError(problems)
        return template

    def clean(self):
        data = super().clean()
        template = data.get("template") or ""
        variables = _split_names(data.get("variables", ""))
        if variables:
            missing = [v for v in variables if f"{{{v}}}" not in template]
            if missing and "template" in data:
                self.add_error("variables", f"Not in the template: {', '.join(missing)}.")
        else:
            variables = template_placeholders(template)
        data["variables"] = variables
        mode = data.get("tools_mode")
        names = _split_names(data.get("tools", ""))
        if mode == ToolsMode.ALL:
            data["tools"] = None
        elif mode == ToolsMode.NONE:
            data["tools"] = []
        elif mode == ToolsMode.LISTED:
            if not names:
                self.add_error("tools", "Name at least one action, or choose another option.")
            elif problem := tools_problem(names):
                self.add_error("tools", problem)
            data["tools"] = names
        return data

    def service_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"description": data["description"], "template": data["template"], "variables": data["variables"],
                "tools": data["tools"]}

    @classmethod
    def initial_from(cls, version: PromptVersion) -> dict[str, Any]:
        tools = version.tools
        mode = ToolsMode.ALL if tools is None else ToolsMode.NONE if not tools else ToolsMode.LISTED
        return {"name": version.name, "description": version.description, "template": version.template,
                "variables": ", ".join(version.variables or []), "tools_mode": mode,
                "tools": "\n".join(tools or [])}


FORMS = {"model": ModelVersionForm, "prompt": PromptVersionForm}


# --- acts on a version -----------------------------------------------------------------------------

class UUIDListField(forms.Field):
    """Ids posted as repeated values (checkboxes); only their shape is checked here."""

    widget = forms.CheckboxSelectMultiple

    def to_python(self, value):
        values = value if isinstance(value, list | tuple) else ([value] if value else [])
        try:
            return [uuid.UUID(str(v)) for v in values]
        except ValueError:
            raise ValidationError("Evidence must be evaluation run ids.")


class DecisionForm(forms.Form):
    """Approve or reject: the reason and the evidence go to the service as posted, so that a
    missing reason, or evidence that is not a finished run of this version, is refused (and
    audited) by the lifecycle itself."""

    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    evidence = UUIDListField(required=False)


class ReasonForm(forms.Form):
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class DeployForm(forms.Form):
    """Activate, A/B split or shadow: the version of the other kind to pair with, a reason, and
    for a split the share of conversations."""

    partner = forms.UUIDField(error_messages={"required": "Choose the version to pair it with.",
                                              "invalid": "Choose the version to pair it with."})
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    percent = forms.IntegerField(required=False, error_messages={"invalid": "The share is a whole percentage."})

    def __init__(self, *args, partner_model, split: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.partner_model = partner_model
        self.fields["percent"].required = split
        self.fields["percent"].error_messages["required"] = "Give the share of conversations, 1 to 99 %."

    def clean_partner(self):
        pk = self.cleaned_data["partner"]
        partner = self.partner_model.objects.filter(pk=pk).first()
        if partner is None:
            what = "model" if self.partner_model is ModelVersion else "prompt"
            raise ValidationError(f"That {what} version does not exist.")
        return partner
