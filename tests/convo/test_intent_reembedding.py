"""Intent example phrases follow the knowledge index when the embedding model changes."""

from __future__ import annotations

import pytest
from django.test import override_settings

from convo.models import IntentExample
from knowledge.embedding_spaces import reembed_run, reembed_start
from knowledge.embeddings import clear_cache
from tests.fakes.openai_server import FakeOpenAI, fake_embedding

pytestmark = pytest.mark.django_db(transaction=False)


def test_switching_the_embedding_model_re_embeds_the_intent_examples(demo, django_capture_on_commit_callbacks):
    example = IntentExample.objects.select_related("intent").order_by("text").first()
    assert example is not None
    before = list(example.embedding)
    with FakeOpenAI() as fake, override_settings(EMBEDDINGS="openai", LLM_BASE_URL=fake.base_url, LLM_API_KEY="t",
                                                 EMBEDDINGS_OPENAI_MODEL="text-embedding-3-small"):
        clear_cache()
        space = reembed_start(dispatch=False)
        with django_capture_on_commit_callbacks(execute=True):
            reembed_run(space_id=space.pk)
    clear_cache()
    example.refresh_from_db()
    assert list(example.embedding) != before
    assert list(example.embedding) == pytest.approx(fake_embedding(example.text, 384), abs=1e-6)
