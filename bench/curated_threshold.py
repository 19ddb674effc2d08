#!/usr/bin/env python
"""How well the curated-answer threshold separates paraphrases from other questions.

Not a test: it prints figures. From the repo root:

    .venv/bin/python bench/curated_threshold.py

Each curated answer below (written for the demo company) is embedded the way ingestion embeds
a curated answer's chunk ("question. . answer", the bundled MiniLM); each customer question is
embedded as a query. For thresholds around ``knowledge.selectors.CURATED_MIN_SIMILARITY`` it
prints how many paraphrases would be answered by their own curated answer (it must clear the
threshold and be the closest curated answer), how many by another one, and how many of the
other questions (some deliberately close to a curated one) would wrongly get a curated answer.
A missed paraphrase still gets a normal answer from the help centre; a false match gets a
wrong answer word for word, so the threshold leans towards precision.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

CURATED = {
    "used-tent": ("Can I return a tent I have already used?",
                  "Yes, within 30 days if it is clean, dry and complete with its pegs and bag. Used tents are "
                  "inspected at our warehouse; if there is damage beyond normal use we refund part of the price."),
    "student": ("Do you offer a student discount?",
                "Yes: students get 10% off full-price items. Verify your student status once with UNiDAYS and the "
                "code works for a year."),
    "pickup": ("Can I collect my order from your shop in Hamburg?",
               "Yes. Choose 'Click & collect – Hamburg' at checkout; we email you when it is ready, usually the "
               "next working day. Bring the email and an ID."),
    "waterproof": ("Is the Summit 40 backpack waterproof?",
                   "The Summit 40 is water-resistant, not waterproof: its coated fabric sheds rain for a few hours. "
                   "For all-day rain use the rain cover that comes in the bottom pocket."),
    "email": ("How do I change the email address on my account?",
              "Sign in, open Account > Personal details, enter the new address and confirm it with the link we "
              "send there. Your orders and points stay with your account."),
    "switzerland": ("Do you ship to Switzerland?",
                    "Yes, we deliver to Switzerland in 4 to 7 working days for 14.90 EUR. Swiss import VAT and "
                    "customs fees are charged by the carrier on delivery."),
    "add-item": ("Can I add an item to an order I already placed?",
                 "Orders cannot be changed once placed, but you can place a second order: if both are still being "
                 "packed we ship them together and refund the second shipping fee."),
    "gift-expiry": ("Do gift cards expire?",
                    "Brightwater gift cards are valid for three years from the date of purchase. The remaining "
                    "balance stays on the card until then."),
}

PARAPHRASES = {
    "used-tent": ["I camped one night in my new tent, can I still send it back?",
                  "is it possible to return a used tent",
                  "Can tents be returned after I've slept in them?"],
    "student": ["Is there a discount for students?", "do students get money off",
                "I'm at university, any student deal?"],
    "pickup": ["Can I pick up my order in the Hamburg store?", "is click and collect available in hamburg",
               "I'd like to collect my parcel at your Hamburg shop instead of delivery"],
    "waterproof": ["Is the Summit 40 pack waterproof?", "will the summit 40 keep my stuff dry in the rain",
                   "Does the Summit 40 rucksack let water in?"],
    "email": ["How can I update my email address?", "change email on my account",
              "I have a new e-mail address, how do I change it in my profile?"],
    "switzerland": ["Do you deliver to Switzerland?", "can you ship my order to zurich",
                    "Is shipping to Switzerland possible?"],
    "add-item": ["I forgot something, can I add it to my existing order?", "add a product to my order",
                 "Can I put one more item in the order I placed this morning?"],
    "gift-expiry": ["Does my gift card have an expiry date?", "how long is a gift card valid",
                    "Will my gift voucher run out?"],
}

# Questions no curated answer above answers: help-centre topics (some close to a curated one),
# actions, small talk.
UNRELATED = [
    "How long does standard delivery take within Germany?",
    "How much does shipping to Austria cost?",
    "How do I return an item?",
    "What is your returns policy?",
    "How long do refunds take?",
    "Can I pay with a gift card?",
    "How do I buy a gift card?",
    "Can I pay with PayPal?",
    "My jacket arrived damaged",
    "How do I wash a down sleeping bag?",
    "How do I reseal a tent seam?",
    "What does the warranty on backpacks cover?",
    "How do I delete my account?",
    "How do I reset my password?",
    "Where is my order BW-10002?",
    "Can I change my delivery address?",
    "Do you have a loyalty programme?",
    "Which size should I pick for hiking boots?",
    "Is the Summit 40 backpack good for a week-long trek?",
    "Do you have a shop in Berlin?",
    "Do you offer discounts for teachers?",
    "Can I cancel my order?",
    "hello",
    "I want to talk to a person",
]

CURATED.update({
    "night-delivery": ("Can you deliver on a Saturday?",
                       "Saturday delivery is available in Germany and Austria for orders placed by Thursday 14:00. "
                       "Choose 'Saturday delivery' at checkout; it costs 9.90 EUR extra and is not available for "
                       "bulky items such as kayaks and large tents. If nobody is home, the carrier leaves a card and "
                       "tries again on Monday, or you can pick the parcel up at the nearest parcel shop from "
                       "Monday morning. Saturday delivery cannot be added to an order after it has shipped, and "
                       "it does not apply to click and collect orders."),
    "price-match": ("Do you match prices from other shops?",
                    "Yes, we match the price of an identical item in stock at another German online shop. Send us "
                    "a link before you order and we confirm within one working day with a personal code. We do "
                    "not match marketplace sellers, clearance sales or bundle prices, and the match applies to "
                    "one unit per customer. If we lower our own price within 14 days of your order, we refund the "
                    "difference automatically."),
    "repair": ("Do you repair zips on jackets?",
               "Yes. Our repair service replaces broken zips on jackets and sleeping bags: under warranty it is "
               "free, otherwise it costs from 25 EUR. Send the item with the repair form from your account; "
               "repairs take about three weeks."),
})
PARAPHRASES.update({
    "night-delivery": ["Do you deliver on Saturdays?", "is weekend delivery possible",
                       "Can my parcel arrive on a Saturday?"],
    "price-match": ["Will you match a cheaper price I found elsewhere?", "price match",
                    "Another shop sells the same tent for less, can you match it?"],
    "repair": ["Can you fix the zipper on my jacket?", "my jacket zip is broken, do you repair it",
               "Do you offer zip repairs?"],
})
UNRELATED += [
    "Do you deliver on Sundays to Switzerland?",
    "Can I get next-day delivery?",
    "Do you have a discount code?",
    "Is there a sale on tents?",
    "My jacket zip broke, can I get a refund?",
    "Can I exchange a jacket for a different size?",
    "How do I update my delivery address?",
    "Can I return a used sleeping bag?",
    "Where is your Hamburg store?",
    "Do gift cards work in the Hamburg shop?",
    "What are your opening hours?",
    "Is the Summit 40 backpack in stock?",
]


def main() -> int:
    import django

    django.setup()
    import numpy as np

    from knowledge.embedding_spaces import embedding_text
    from knowledge.embeddings import embed_texts
    from knowledge.selectors import CURATED_MIN_SIMILARITY

    keys = list(CURATED)
    answers = np.asarray(embed_texts([embedding_text(title=CURATED[k][0], section="", text=CURATED[k][1])
                                      for k in keys]))
    paraphrases = [(text, key) for key, texts in PARAPHRASES.items() for text in texts]
    para = np.asarray(embed_texts([text for text, _ in paraphrases])) @ answers.T
    other = np.asarray(embed_texts(UNRELATED)) @ answers.T
    print(f"{len(keys)} curated answers, {len(paraphrases)} paraphrases, {len(UNRELATED)} other questions; "
          f"CURATED_MIN_SIMILARITY={CURATED_MIN_SIMILARITY}")
    for t in np.arange(0.56, 0.73, 0.01):
        right = sum(1 for (_, k), row in zip(paraphrases, para) if row.max() >= t and row.argmax() == keys.index(k))
        wrong = sum(1 for (_, k), row in zip(paraphrases, para) if row.max() >= t and row.argmax() != keys.index(k))
        false = sum(1 for row in other if row.max() >= t)
        mark = "  <- in use" if abs(t - CURATED_MIN_SIMILARITY) < 0.005 else ""
        print(f"threshold {t:.2f}: paraphrases answered right {right}/{len(paraphrases)}, by another answer {wrong}; "
              f"other questions given a curated answer {false}/{len(UNRELATED)}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
