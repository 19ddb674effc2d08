"""Teams and one person per role for the review tests (no demo company: see factories)."""

from __future__ import annotations

import pytest

from tests.review.factories import make_people, make_team


@pytest.fixture
def support(db):
    return make_team("Support")


@pytest.fixture
def billing(db):
    return make_team("Billing")


@pytest.fixture
def people(support, billing):
    return make_people(support, billing)

