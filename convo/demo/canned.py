"""Brightwater Outfitters' canned responses for the demo: the replies agents insert most.

Each text follows the help-centre articles in convo/demo/articles (shipping-and-delivery,
returns-policy, refunds, order-tracking); change those first when a policy changes."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model

from convo.models import CannedResponse
from review.services import team_default

DEMO_AUTHOR = "supervisor"


@dataclass(frozen=True)
class DemoCannedResponse:
    shortcut: str
    title: str
    text: str
    team_only: bool = False  # True: only the default (Support) team's agents get it


DEMO_CANNED_RESPONSES = [
    DemoCannedResponse(
        "greeting", "Greeting after taking over",
        "Hi {customer_name}, this is {agent_name} from the Brightwater team. I've read through your chat "
        "with our assistant, so there's no need to repeat anything. Give me a moment to look into it.",
    ),
    DemoCannedResponse(
        "delivery-times", "Delivery times",
        "Orders placed before 14:00 (CET) on a working day leave our Leipzig warehouse the same day. "
        "Standard delivery takes 2 to 4 working days within Germany and 4 to 7 working days to other EU "
        "countries. Your shipping confirmation email has the tracking number for each parcel.",
    ),
    DemoCannedResponse(
        "return-window", "Returns within 30 days",
        "You can return any item within 30 days of delivery, no reason needed. Clothing and footwear should "
        "be unworn with the tags still on. Start the return from the Orders page in your account (or the "
        "Returns page with your order number and email), print the prepaid label, and drop the parcel at "
        "the carrier named on it. Returns from Germany are free.",
    ),
    DemoCannedResponse(
        "refund-timeline", "Refund timeline",
        "Hi {customer_name}, thanks for your patience. Our warehouse checks returns within 5 working days of "
        "receiving them, and the refund is issued to your original payment method straight after. PayPal, "
        "Apple Pay and Google Pay refunds usually show within 1 to 2 working days, card refunds within 3 to "
        "10 working days depending on your bank. You'll get an email as soon as it's issued. — {agent_name}",
        team_only=True,
    ),
]


def load_canned_responses() -> int:
    """Create or update the demo responses by shortcut; returns how many changed. Idempotent:
    a second run changes nothing, and responses people added in the admin are left alone."""
    team = team_default()
    author = get_user_model().objects.filter(username=DEMO_AUTHOR).first()
    changed = 0
    for spec in DEMO_CANNED_RESPONSES:
        wanted = {"title": spec.title, "text": spec.text, "active": True}
        response_team = team if spec.team_only else None
        response = CannedResponse.objects.filter(team=response_team, shortcut=spec.shortcut).first()
        if response is None:
            CannedResponse.objects.create(team=response_team, shortcut=spec.shortcut, created_by=author, **wanted)
            changed += 1
        elif any(getattr(response, field) != value for field, value in wanted.items()):
            for field, value in wanted.items():
                setattr(response, field, value)
            response.save(update_fields=[*wanted, "updated_at"])
            changed += 1
    return changed
