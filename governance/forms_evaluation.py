"""The form that starts an evaluation run (dataset or replay) of a model + prompt version pair."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from governance.evaluation import PARAMS
from governance.models import ModelVersion, PromptVersion, RunKind


def _bounds(kind: str, name: str) -> tuple[int, int, int]:
    default, low, high = next((d, lo, hi) for n, d, lo, hi in PARAMS[kind] if n == name)
    return default, low, high


class VersionChoiceField(forms.ModelChoiceField):
    default_error_messages = {"invalid_choice": "Choose one of the listed versions: that one does not exist."}

    def label_from_instance(self, obj) -> str:
        return f"{obj.label} · {obj.get_status_display().lower()}"

    def to_python(self, value):
        # A malformed id is the same mistake as an unknown one (not "is not a valid UUID").
        try:
            return super().to_python(value)
        except ValidationError:
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice") from None


class EvaluationRunForm(forms.Form):
    """Which pair, which kind of run and how many cases; ``params()`` gives the run's parameters."""

    KINDS = [(RunKind.DATASET, "Dataset"), (RunKind.REPLAY, "Replay")]

    model_version = VersionChoiceField(queryset=ModelVersion.objects.order_by("name", "-version"),
                                       empty_label="Choose a model version", label="Model version")
    prompt_version = VersionChoiceField(queryset=PromptVersion.objects.order_by("name", "-version"),
                                        empty_label="Choose a prompt version", label="Prompt version")
    kind = forms.ChoiceField(choices=KINDS, initial=RunKind.DATASET, widget=forms.RadioSelect, label="Kind of run")
    intent_cases = forms.IntegerField(
        min_value=_bounds(RunKind.DATASET, "intent_cases")[1], max_value=_bounds(RunKind.DATASET, "intent_cases")[2],
        initial=_bounds(RunKind.DATASET, "intent_cases")[0], required=False, label="Intent phrases",
        help_text="How many of the intents' example phrases to include, the same number from each intent.")
    conversations = forms.IntegerField(
        min_value=_bounds(RunKind.REPLAY, "conversations")[1], max_value=_bounds(RunKind.REPLAY, "conversations")[2],
        initial=_bounds(RunKind.REPLAY, "conversations")[0], required=False, label="Conversations",
        help_text="The most recent closed or assistant-only conversations to replay.")

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        wanted = "intent_cases" if kind == RunKind.DATASET else "conversations" if kind == RunKind.REPLAY else ""
        if wanted:
            # The other kind's number does not apply: whatever is in its box is ignored.
            other = "conversations" if wanted == "intent_cases" else "intent_cases"
            self.errors.pop(other, None)
            data.pop(other, None)
        if wanted and data.get(wanted) is None and wanted not in self.errors:
            self.add_error(wanted, "Enter a number.")
        return data

    def params(self) -> dict:
        kind = self.cleaned_data["kind"]
        name = "intent_cases" if kind == RunKind.DATASET else "conversations"
        return {name: self.cleaned_data[name]}
