"""Evaluation: the cases people flagged, and runs that compare a candidate version with the active one."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from config.models import BaseModel
from governance.models.versions import Deployment, ModelVersion, PromptVersion


class EvaluationCategory(models.TextChoices):
    """Why an AI answer was wrong (the reviewer's choice when flagging it)."""

    WRONG_FACTS = "wrong_facts", "Wrong facts"
    OUTDATED = "outdated", "Outdated information"
    MISSING_SOURCE = "missing_source", "Not in the sources / made up"
    INCOMPLETE = "incomplete", "Incomplete"
    WRONG_ACTION = "wrong_action", "Wrong action or intent"
    TONE = "tone", "Tone or wording"
    UNSAFE = "unsafe", "Unsafe or against policy"


class EvaluationCase(BaseModel):
    """A question the assistant answered wrongly, with the answer it should have given.

    Made when a person flags an AI answer; the model and prompt versions that gave the bad
    answer are kept so the next version can be evaluated on the same question. Governance is
    the lowest layer, so the source (e.g. ``convo.message``), the conversation and the curated
    answer written from it are stored as ids, not foreign keys."""

    question = models.TextField(help_text="The customer's message (personal data redacted)")
    expected_answer = models.TextField(help_text="The corrected answer")
    bad_answer = models.TextField(help_text="What the assistant said")
    category = models.CharField(max_length=20, choices=EvaluationCategory.choices)
    source_type = models.CharField(max_length=80)
    source_id = models.CharField(max_length=64)
    conversation_id = models.CharField(max_length=64, blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="evaluation_cases")
    prompt_version = models.ForeignKey(PromptVersion, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="evaluation_cases")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    curated_document_id = models.CharField(max_length=64, blank=True)
    active = models.BooleanField(default=True, help_text="Used when evaluating model and prompt versions")

    class Meta:
        constraints = [
            # One case per flagged answer: flagging the same message twice is refused.
            models.UniqueConstraint(fields=["source_type", "source_id"], name="evaluationcase_source_uniq"),
        ]
        # The admin's and the evaluation run's filter: cases of a category, newest first.
        indexes = [models.Index(fields=["category", "created_at"], name="evaluationcase_category_idx")]

    def __str__(self) -> str:
        question = self.question if len(self.question) <= 60 else f"{self.question[:59]}…"
        return f"{self.get_category_display()}: {question}"




class RunKind(models.TextChoices):
    DATASET = "dataset", "Dataset (intent and QA cases)"
    REPLAY = "replay", "Replay of recorded conversations"
    SHADOW = "shadow", "Shadow traffic"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class EvaluationRun(BaseModel):
    """One evaluation of a candidate model + prompt version against a baseline (the active pair,
    or what was recorded for replays), with progress and a summary report.

    Dataset and replay runs are Celery tasks; a shadow run collects results while its shadow
    deployment serves (``deployment``) and is finished when the shadow ends."""

    kind = models.CharField(max_length=10, choices=RunKind.choices)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    candidate_model = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="candidate_runs")
    candidate_prompt = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="candidate_runs")
    baseline_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="baseline_runs")
    baseline_prompt = models.ForeignKey(PromptVersion, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="baseline_runs")
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="shadow_runs")
    params = models.JSONField(default=dict, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["candidate_model", "-created_at"], name="evalrun_model_idx"),
                   models.Index(fields=["candidate_prompt", "-created_at"], name="evalrun_prompt_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.candidate_model.label} + {self.candidate_prompt.label}"

    @property
    def progress_percent(self) -> int:
        return 100 if self.status == RunStatus.DONE else int(100 * self.done / self.total) if self.total else 0


class EvaluationResult(BaseModel):
    """One case of a run: the input, what was expected, what the baseline and the candidate did.

    ``baseline`` and ``candidate`` hold ``{"reply", "decision", "intent", "action", "cited",
    "grounded", "latency_ms", "cost"}``; ``agree`` is whether they reached the same decision and
    action with equivalent answers."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="results")
    position = models.PositiveIntegerField()
    case_type = models.CharField(max_length=20)  # intent / qa / curated / replay / shadow
    case_ref = models.CharField(max_length=64, blank=True)
    input_text = models.TextField()
    expected = models.JSONField(default=dict, blank=True)
    baseline = models.JSONField(default=dict, blank=True)
    candidate = models.JSONField(default=dict, blank=True)
    agree = models.BooleanField(default=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="evalresult_run_position_uniq")]
        # The report lists a run's disagreements first.
        indexes = [models.Index(fields=["run", "agree", "position"], name="evalresult_run_agree_idx")]

    def __str__(self) -> str:
        return f"{self.run_id} #{self.position} ({'agree' if self.agree else 'differs'})"
