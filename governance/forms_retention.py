"""Forms of the retention page. They check the shape of the input; the services check the rules
(``governance.retention``) and their refusals come back as errors of these forms."""

from __future__ import annotations

from django import forms

from governance.models import HoldScope, RetentionAction
from governance.retention import ERASURE_SUBJECTS, MAX_AFTER_DAYS, RetentionError
from governance.retention_registry import data_kinds


def _kind_choices() -> list[tuple[str, str]]:
    return [(name, handler.label) for name, handler in data_kinds().items()]


class RetentionForm(forms.Form):
    """Shared: put a service refusal on the field it names (or on the form)."""

    def add_service_error(self, exc: RetentionError) -> None:
        self.add_error(exc.field if exc.field in self.fields else None, str(exc))


class PolicyForm(RetentionForm):
    data_kind = forms.ChoiceField(choices=_kind_choices, widget=forms.HiddenInput,
                                  error_messages={"invalid_choice": "Unknown kind of data %(value)r."})
    action = forms.ChoiceField(choices=RetentionAction.choices, label="Then",
                               error_messages={"invalid_choice": "Choose delete or anonymise."})
    after_days = forms.IntegerField(
        label="Days to keep", min_value=1, max_value=MAX_AFTER_DAYS,
        error_messages={"min_value": "Keep data at least 1 day: 0 or fewer days is not a retention period.",
                        "max_value": f"At most {MAX_AFTER_DAYS:,} days; to keep data for ever, disable the policy.",
                        "invalid": "Enter the number of days as a whole number, e.g. 365.",
                        "required": "Enter the number of days to keep the data."},
        widget=forms.NumberInput(attrs={"min": 1, "max": MAX_AFTER_DAYS, "inputmode": "numeric"}))
    enabled = forms.BooleanField(required=False, label="Run daily")


class PreviewForm(RetentionForm):
    data_kind = forms.ChoiceField(choices=_kind_choices, widget=forms.HiddenInput,
                                  error_messages={"invalid_choice": "Unknown kind of data %(value)r."})


class HoldForm(RetentionForm):
    name = forms.CharField(max_length=120, label="Name", help_text="e.g. the case or request reference",
                           error_messages={"required": "Give the hold a name, e.g. the case it is for."})
    subject_type = forms.ChoiceField(choices=HoldScope.choices, label="Holds", initial=HoldScope.CONTACT,
                                     widget=forms.RadioSelect)
    subject_id = forms.CharField(max_length=64, required=False, label="Customer or conversation id",
                                 help_text="Copy it from the customer's or conversation's page. Empty for a date range.")
    from_date = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}),
                                error_messages={"invalid": "Enter a date as YYYY-MM-DD."})
    to_date = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}),
                              error_messages={"invalid": "Enter a date as YYYY-MM-DD."})
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), label="Why the data must be kept",
                             error_messages={"required": "Say why the data must be kept (the reason is recorded)."})


class ReleaseForm(RetentionForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), label="Why it can be released",
                             error_messages={"required": "Say why the hold can be released (the reason is recorded)."})


class EraseForm(RetentionForm):
    subject_type = forms.ChoiceField(choices=[(s.value, s.label) for s in HoldScope if s in ERASURE_SUBJECTS],
                                     label="Erase", initial=HoldScope.CONTACT, widget=forms.RadioSelect)
    subject_id = forms.CharField(max_length=64, label="Customer or conversation id",
                                 error_messages={"required": "Enter the id of the customer or conversation to erase."})
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), label="Request reference and reason",
                             help_text="Kept in the audit log for good: a reference, not the customer's name or e-mail.",
                             error_messages={"required": "Say why the data is erased, e.g. the request's reference."})
    confirm = forms.BooleanField(label="I understand that this cannot be undone",
                                 error_messages={"required": "Tick the box to confirm: erasure cannot be undone."})
