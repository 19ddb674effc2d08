"""Evaluation metrics on handmade examples: groundedness, agreement, expected answers, summaries."""

from __future__ import annotations

import pytest

from governance.metrics import (
    actions_equal,
    answer_meets_expected,
    content_words,
    expected_recall,
    groundedness,
    percentile,
    replies_agree,
    sentences,
    sides_agree,
    summary_build,
    word_f1,
)

SHIPPING = ("Standard delivery within Germany takes 2 to 4 working days and costs 4.95 EUR. Express delivery "
            "arrives the next working day when ordered before 2 pm.")
RETURNS = "You can return unworn items within 30 days of delivery for a full refund."


def test_content_words_drop_stop_words_single_letters_and_plural_s():
    assert content_words("The refunds take 5 days, and a box is free!") == ["refund", "take", "5", "day", "box", "free"]
    assert content_words("Address class") == ["address", "class"]  # "ss" is not a plural


def test_sentences_strip_citation_markers():
    answer = "Delivery takes 2 to 4 working days. [1] Express is faster. [2]\nReturns are free [3]."
    assert sentences(answer) == ["Delivery takes 2 to 4 working days.", "Express is faster.", "Returns are free."]


def test_an_extract_of_its_sources_is_fully_grounded():
    answer = ("Standard delivery within Germany takes 2 to 4 working days and costs 4.95 EUR. [1] "
              "You can return unworn items within 30 days of delivery for a full refund. [2]")
    assert groundedness(answer, [SHIPPING, RETURNS]) == 1.0


def test_a_sentence_counts_only_when_one_source_holds_most_of_its_words():
    answer = ("Standard delivery within Germany takes 2 to 4 working days. [1] "
              "We also plant a tree for every order shipped to Austria. [1]")
    assert groundedness(answer, [SHIPPING]) == 0.5
    # Words spread over two sources do not support a sentence that neither source says.
    mixed = "Express costs 4.95 EUR, unworn items get a refund."
    assert groundedness(mixed, [SHIPPING, RETURNS]) == 0.0


def test_groundedness_without_sources_or_sentences():
    assert groundedness("Delivery takes a week.", []) == 0.0
    assert groundedness("", [SHIPPING]) is None
    assert groundedness("Yes, so it is!", [SHIPPING]) is None  # no content word to judge


def test_paraphrased_answers_agree_and_different_ones_do_not():
    a = "Standard delivery in Germany takes 2 to 4 working days."
    b = "Within Germany, standard delivery takes 2-4 working days and costs 4.95 EUR."
    c = "You can return unworn items within 30 days."
    assert word_f1(a, b) >= 0.5 and replies_agree(a, b)
    assert not replies_agree(a, c)
    # The same cited chunks make two wordings equivalent even with little overlap.
    assert replies_agree("Yes, 30 days.", "Returns are accepted for a month.", [{"chunk_id": "c1"}], [{"chunk_id": "c1"}])
    assert not replies_agree("Yes, 30 days.", "Returns are accepted for a month.", [{"chunk_id": "c1"}],
                             [{"chunk_id": "c2"}])


def test_actions_compare_name_and_parameters_as_read():
    refund = {"name": "refund_request", "params": {"order_id": "BW-10003", "amount": 40}}
    assert actions_equal(refund, {"name": "refund_request", "params": {"order_id": "bw-10003 ", "amount": "40.0"}})
    assert not actions_equal(refund, {"name": "refund_request", "params": {"order_id": "BW-10003", "amount": 45}})
    assert not actions_equal(refund, {"name": "change_address", "params": refund["params"]})
    assert not actions_equal(refund, None)
    assert actions_equal(None, None)


def test_sides_agree_on_decision_action_intent_and_answer():
    answer = {"decision": "answer", "reply": "Delivery takes 2 to 4 working days.", "action": None}
    assert sides_agree(answer, {**answer, "reply": "It takes 2 to 4 working days for delivery."})
    assert not sides_agree(answer, {**answer, "reply": "Returns are free within 30 days."})
    assert not sides_agree(answer, {**answer, "decision": "fallback"})
    approval = {"decision": "approval", "reply": "Sent for approval", "action": {"name": "refund_request",
                                                                                  "params": {"amount": 40}}}
    assert sides_agree(approval, {**approval, "reply": "worded otherwise"})
    assert not sides_agree(approval, {**approval, "action": {"name": "refund_request", "params": {"amount": 400}}})
    clarify = {"decision": "clarify", "intent": "refund_request", "reply": "Why?", "action": None}
    assert not sides_agree(clarify, {**clarify, "intent": "change_address"})
    assert sides_agree({"decision": "escalate", "reply": "a"}, {"decision": "escalate", "reply": "b"})


def test_expected_answers_are_met_by_recall():
    expected = "Standard delivery within Germany takes 2 to 4 working days."
    verbose = SHIPPING  # says more, and everything expected
    assert expected_recall(verbose, expected) == 1.0 and answer_meets_expected(verbose, expected)
    assert not answer_meets_expected("I couldn't find that in our help centre.", expected)
    assert not answer_meets_expected("Delivery takes a week.", expected)  # 2 of 9 words


@pytest.mark.parametrize(("q", "expected"), [(0.5, 30.0), (0.95, 48.0), (0.0, 10.0), (1.0, 50.0)])
def test_percentiles_interpolate_between_ranks(q, expected):
    assert percentile([50, 10, 30, 20, 40], q) == pytest.approx(expected)


def test_percentile_of_nothing():
    assert percentile([], 0.5) is None


def _side(decision, *, action=None, grounded=None, met=None, latency=100.0, cost="0.001", tokens=10):
    return {"decision": decision, "action": action, "grounded": grounded, "met": met, "latency_ms": latency,
            "cost": cost, "tokens": tokens}


def test_summary_follows_the_shared_schema():
    refund = {"name": "refund_request", "params": {"amount": 40}}
    rows = [
        {"agree": True, "baseline": _side("answer", grounded=1.0, met=True, latency=100),
         "candidate": _side("answer", grounded=0.5, met=True, latency=200, cost="0.002")},
        {"agree": False, "baseline": _side("escalate", met=False, latency=300),
         "candidate": _side("answer", grounded=1.0, met=True, latency=100, cost="0.002")},
        {"agree": False, "baseline": _side("approval", action=refund, met=True, latency=200),
         "candidate": _side("approval", action={**refund, "params": {"amount": 45}}, met=False, latency=300,
                            cost="0.002")},
        {"agree": True, "baseline": _side("escalate", met=True), "candidate": _side("escalate", met=True,
                                                                                      cost="0.002")},
    ]
    summary = summary_build(rows)
    assert summary["cases"] == 4
    assert summary["agreement"] == 0.5
    assert summary["differing"] == 2
    assert summary["escalation"] == {"both": 1, "baseline_only": 1, "candidate_only": 0, "neither": 2}
    assert summary["actions"] == {"same": 0, "differ": 1, "baseline_only": 0, "candidate_only": 0, "neither": 3}
    assert summary["baseline"] == {"groundedness": 1.0, "accuracy": 0.75, "latency_p50_ms": 150.0,
                                   "latency_p95_ms": 285.0, "cost": "0.004", "tokens": 40}
    assert summary["candidate"]["groundedness"] == 0.75
    assert summary["candidate"]["accuracy"] == 0.75
    assert summary["candidate"]["cost"] == "0.008"
    assert summary["candidate"]["latency_p50_ms"] == 150.0


def test_summary_without_expectations_or_cases():
    summary = summary_build([{"agree": True, "baseline": _side("answer", cost="0"), "candidate": _side("answer",
                                                                                                      cost="0")}])
    assert summary["baseline"]["accuracy"] is None and summary["baseline"]["groundedness"] is None
    assert summary["baseline"]["cost"] == "0"
    empty = summary_build([])
    assert empty["cases"] == 0 and empty["agreement"] is None
    assert empty["candidate"]["latency_p50_ms"] is None
