"""Public help-centre pages: where the assistant's citations link to."""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from knowledge.models import Audience, Document, DocumentStatus


@require_GET
def help_article(request, slug: str):
    document = (
        Document.objects.filter(slug=slug, status=DocumentStatus.READY, published=True,
                                collection__audience=Audience.CUSTOMER)
        .select_related("collection").first()
    )
    if document is None:
        raise Http404("No such article.")
    return render(request, "knowledge/article.html", {"document": document})


@require_GET
def help_index(request):
    documents = Document.objects.filter(status=DocumentStatus.READY, published=True,
                                        collection__audience=Audience.CUSTOMER).order_by("title")
    return render(request, "knowledge/index.html", {"documents": documents})
