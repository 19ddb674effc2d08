"""Contacts, conversations, messages, AI turns, the intents the assistant recognises and the
canned responses agents insert into their replies."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from pgvector.django import VectorField

from config.models import BaseModel


class Contact(BaseModel):
    """A customer. Anonymous web visitors get one per conversation until they identify."""

    name = models.CharField(max_length=150, blank=True)
    email = models.EmailField(blank=True)
    external_id = models.CharField(max_length=150, blank=True, db_index=True)

    def __str__(self) -> str:
        return self.name or self.email or f"Visitor {str(self.pk)[-6:]}"


CSAT_COMMENT_MAX_CHARS = 1000


class Channel(models.TextChoices):
    WEB = "web", "Web chat"
    API = "api", "REST API"


class ConversationStatus(models.TextChoices):
    BOT = "bot", "With the assistant"
    HANDOFF = "handoff", "Waiting for a person"
    HUMAN = "human", "With a person"
    CLOSED = "closed", "Closed"


class Conversation(BaseModel):
    """A chat between a customer, the assistant and, when needed, an agent."""

    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="conversations")
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.WEB)
    status = models.CharField(max_length=20, choices=ConversationStatus.choices, default=ConversationStatus.BOT)
    assigned_agent = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="assigned_conversations")
    ai_disclosed = models.BooleanField(default=False, help_text="The customer was told they talk to an AI")
    summary = models.TextField(blank=True)
    state = models.JSONField(default=dict, blank=True, help_text="Multi-turn state: pending action, strikes")
    last_seq = models.PositiveIntegerField(default=0)
    resolution = models.CharField(max_length=40, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # The satisfaction survey posted when the conversation is closed (convo.services.csat_submit).
    csat_score = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 (very poor) to 5 (excellent)")
    csat_comment = models.CharField(max_length=CSAT_COMMENT_MAX_CHARS, blank=True)
    csat_requested_at = models.DateTimeField(null=True, blank=True)
    csat_submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "updated_at"], name="conversation_status_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(csat_score__isnull=True) | models.Q(csat_score__gte=1, csat_score__lte=5),
                name="conversation_csat_score_range"),
        ]

    def __str__(self) -> str:
        return f"Conversation {str(self.pk)[-8:]} ({self.get_status_display()})"


class Role(models.TextChoices):
    CUSTOMER = "customer"
    ASSISTANT = "assistant"
    AGENT = "agent"
    SYSTEM = "system"


class Message(BaseModel):
    """One message, numbered within its conversation so clients can resync after a gap."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=20, choices=Role.choices)
    text = models.TextField()
    redacted_text = models.TextField(blank=True)
    client_id = models.CharField(max_length=64, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    sources = models.JSONField(default=list, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_conversation_seq_uniq"),
            models.UniqueConstraint(fields=["conversation", "client_id"], condition=~models.Q(client_id=""),
                                    name="message_conversation_client_id_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"


class Decision(models.TextChoices):
    ANSWER = "answer"
    CLARIFY = "clarify"
    ACTION = "action"
    APPROVAL = "approval", "Action awaiting approval"
    ESCALATE = "escalate"
    SMALLTALK = "smalltalk"
    FALLBACK = "fallback", "No answer found"
    SKIPPED = "skipped", "Skipped (a person is handling it)"
    ERROR = "error"


class TurnStatus(models.TextChoices):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Turn(BaseModel):
    """The record of one AI turn: what it saw, which versions answered, what it decided."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="turn")
    reply = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=20, choices=TurnStatus.choices, default=TurnStatus.PENDING)
    intent = models.CharField(max_length=80, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    decision = models.CharField(max_length=20, choices=Decision.choices, blank=True)
    reason = models.CharField(max_length=40, blank=True)
    sources = models.JSONField(default=list, blank=True)
    provider = models.CharField(max_length=20, blank=True)
    model_version = models.ForeignKey("governance.ModelVersion", null=True, blank=True, on_delete=models.PROTECT)
    prompt_version = models.ForeignKey("governance.PromptVersion", null=True, blank=True, on_delete=models.PROTECT)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    model_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    guards = models.JSONField(default=dict, blank=True)
    tool_call = models.JSONField(default=dict, blank=True)
    action_run_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["intent", "created_at"], name="turn_intent_idx")]

    def __str__(self) -> str:
        return f"Turn {str(self.pk)[-8:]} {self.decision}"


class IntentKind(models.TextChoices):
    ACTION = "action"
    HANDOFF = "handoff"
    SMALLTALK = "smalltalk"


class Intent(BaseModel):
    """Something customers ask for, recognised by similarity to example phrases."""

    name = models.SlugField(max_length=80, unique=True)
    kind = models.CharField(max_length=20, choices=IntentKind.choices)
    action_name = models.CharField(max_length=80, blank=True)
    reply = models.TextField(blank=True, help_text="Fixed reply for small talk")

    def __str__(self) -> str:
        return self.name


class IntentExample(BaseModel):
    """One example phrase and its embedding."""

    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="examples")
    text = models.CharField(max_length=300)
    embedding = VectorField(dimensions=384)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["intent", "text"], name="intentexample_intent_text_uniq")]

    def __str__(self) -> str:
        return self.text


class CannedResponse(BaseModel):
    """A prepared reply an agent inserts into the chat composer. ``text`` may hold the
    placeholders ``{customer_name}`` and ``{agent_name}`` (convo.services.canned_response_render).
    A response without a team is offered to everyone."""

    title = models.CharField(max_length=120)
    shortcut = models.SlugField(max_length=60, help_text="Unique per team, e.g. refund-timeline")
    text = models.TextField(help_text="Placeholders: {customer_name}, {agent_name}")
    team = models.ForeignKey("review.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="canned_responses", help_text="Empty: offered to every team")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["title"]
        constraints = [
            models.UniqueConstraint(fields=["team", "shortcut"], condition=models.Q(team__isnull=False),
                                    name="cannedresponse_team_shortcut_uniq",
                                    violation_error_message="This team already has a response with this shortcut."),
            models.UniqueConstraint(fields=["shortcut"], condition=models.Q(team__isnull=True),
                                    name="cannedresponse_global_shortcut_uniq",
                                    violation_error_message="A response for everyone already uses this shortcut."),
        ]

    def __str__(self) -> str:
        return self.title
