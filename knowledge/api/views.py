"""Knowledge API: the collections one may read, their documents and ingestion jobs; uploads;
publishing.

Access is decided per collection (``knowledge.permissions``): an id one may not read answers
404 exactly like an unknown id; one readable but lacking the action answers 403 with the reason."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.urls import reverse
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from knowledge import publishing, services
from knowledge.api.permissions import IsActiveStaff
from knowledge.api.serializers import (
    collection_as_dict,
    document_as_dict,
    job_as_dict,
    job_summary_as_dict,
    metadata_parse,
)
from knowledge.exceptions import UploadRejected
from knowledge.models import Collection, Document, IngestionJob, IngestionSource
from knowledge.permissions import (
    Action,
    can,
    collection_get_for_user,
    collections_with_access,
    document_get_for_user,
    ingestion_job_get_for_user,
)

EDITOR_NOTE = ("You may edit but not publish in this collection: new documents are stored unpublished, and "
               "files that would change a published document fail.")


def _fetch(getter, what: str, **kwargs):
    try:
        return getter(**kwargs)
    except (Collection.DoesNotExist, Document.DoesNotExist, IngestionJob.DoesNotExist):
        raise NotFound(f"No {what} with that id.") from None
    except DjangoPermissionDenied as exc:
        raise PermissionDenied(str(exc)) from None


class Page(LimitOffsetPagination):
    default_limit = 100
    max_limit = 500


class KnowledgeAPIView(APIView):
    permission_classes = [IsAuthenticated, IsActiveStaff]


class CollectionListView(KnowledgeAPIView):
    """GET: the collections the caller may read, with what they may do on each."""

    def get(self, request):
        collections = collections_with_access(request.user).order_by("name")
        return Response({"results": [collection_as_dict(c) for c in collections]})


class CollectionDocumentsView(KnowledgeAPIView):
    """GET: the collection's documents (``?published=true|false``, ``limit``/``offset``).
    POST multipart ``files`` (one or more) and optional ``metadata`` (a JSON object of labels)
    → 202 with the job to poll."""

    parser_classes = [MultiPartParser, FormParser]

    def get(self, request, collection_id):
        collection = _fetch(collection_get_for_user, "collection", user=request.user, collection_id=collection_id)
        documents = collection.documents.order_by("title", "pk")
        published = request.query_params.get("published")
        if published is not None:
            if published not in ("true", "false"):
                return Response({"detail": "published must be true or false."}, status=status.HTTP_400_BAD_REQUEST)
            documents = documents.filter(published=published == "true")
        page = Page()
        rows = page.paginate_queryset(documents, request, view=self)
        return page.get_paginated_response([document_as_dict(d) for d in rows])

    def post(self, request, collection_id):
        collection = _fetch(collection_get_for_user, "collection", user=request.user, collection_id=collection_id,
                            action=Action.EDIT)
        publish = can(request.user, Action.PUBLISH, collection)
        uploads = request.FILES.getlist("files") + request.FILES.getlist("file")
        try:
            metadata = metadata_parse(request.data.get("metadata"))
        except UploadRejected as exc:
            return Response({"detail": str(exc), "field": "metadata", "file": None}, status=exc.status_code)
        try:
            job = services.ingestion_job_create_from_uploads(collection=collection, uploads=uploads,
                                                             actor=request.user, source=IngestionSource.API,
                                                             metadata=metadata, publish=publish)
        except UploadRejected as exc:
            body = {"detail": str(exc), "file": exc.file_name or None}
            refusals = getattr(exc, "refusals", None)
            if refusals:
                body["refused"] = [{"file": name, "reason": reason} for name, reason in refusals]
            return Response(body, status=exc.status_code)
        body = {"job_id": str(job.pk), "status": job.status, "files": job.total_files, "publish": job.publish,
                "status_url": request.build_absolute_uri(reverse("api-knowledge-job", args=[job.pk]))}
        if not job.publish:
            body["note"] = EDITOR_NOTE
        return Response(body, status=status.HTTP_202_ACCEPTED)


class CollectionJobsView(KnowledgeAPIView):
    """GET: the collection's ingestion jobs, newest first (``limit``/``offset``)."""

    def get(self, request, collection_id):
        collection = _fetch(collection_get_for_user, "collection", user=request.user, collection_id=collection_id)
        page = Page()
        rows = page.paginate_queryset(collection.ingestion_jobs.order_by("-created_at", "pk"), request, view=self)
        return page.get_paginated_response([job_summary_as_dict(j) for j in rows])


class IngestionJobDetailView(KnowledgeAPIView):
    def get(self, request, job_id):
        return Response(job_as_dict(_fetch(ingestion_job_get_for_user, "ingestion job", user=request.user,
                                           job_id=job_id)))


class DocumentPublishView(KnowledgeAPIView):
    """POST (optional JSON ``{"reason": "..."}``): publish, or with ``published=False``
    unpublish, one document. Idempotent: ``changed`` says whether anything changed."""

    parser_classes = [JSONParser, FormParser, MultiPartParser]
    published = True

    def post(self, request, document_id):
        document = _fetch(document_get_for_user, "document", user=request.user, document_id=document_id,
                          action=Action.PUBLISH)
        data = request.data if isinstance(request.data, dict) else {}
        reason = data.get("reason", "")
        if not isinstance(reason, str) or len(reason) > publishing.REASON_MAX_CHARS:
            return Response({"detail": f"reason must be text of at most {publishing.REASON_MAX_CHARS} characters."},
                            status=status.HTTP_400_BAD_REQUEST)
        change = publishing.document_publish if self.published else publishing.document_unpublish
        document, changed = change(actor=request.user, document=document, reason=reason)
        return Response({**document_as_dict(document), "changed": changed})
