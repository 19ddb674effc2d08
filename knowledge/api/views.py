"""Knowledge API: upload documents into a collection, follow the ingestion job."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from knowledge import services
from knowledge.api.permissions import CanManageKnowledge
from knowledge.exceptions import UploadRejected
from knowledge.models import Collection, IngestionJob, IngestionSource


def _get_or_404(model, pk, what: str):
    # Knowledge managers see every collection and job; the role check ran before this.
    try:
        return model.objects.get(pk=pk)
    except (model.DoesNotExist, ValidationError, ValueError):
        raise NotFound(f"No {what} with that id.") from None


def job_as_dict(job: IngestionJob) -> dict:
    files = list(job.files.order_by("position").values(
        "name", "status", "kind", "error", "document_id", "version", "chunk_count", "size"))
    for f in files:
        f["document_id"] = str(f["document_id"]) if f["document_id"] else None
    return {
        "id": str(job.pk), "collection": str(job.collection_id), "status": job.status, "source": job.source,
        "progress": {"done": job.processed_files, "total": job.total_files},
        "failed": job.failed_files, "skipped": job.skipped_files, "chunks": job.chunk_count,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "files": files,
    }


class CollectionDocumentUploadView(APIView):
    """POST multipart ``files`` (one or more) → 202 with the job to poll."""

    permission_classes = [IsAuthenticated, CanManageKnowledge]
    parser_classes = [MultiPartParser, FormParser]

    def post(self, request, collection_id):
        collection = _get_or_404(Collection, collection_id, "collection")
        uploads = request.FILES.getlist("files") + request.FILES.getlist("file")
        try:
            job = services.ingestion_job_create_from_uploads(collection=collection, uploads=uploads,
                                                             actor=request.user, source=IngestionSource.API)
        except UploadRejected as exc:
            return Response({"detail": str(exc), "file": exc.file_name or None}, status=exc.status_code)
        return Response(
            {"job_id": str(job.pk), "status": job.status, "files": job.total_files,
             "status_url": request.build_absolute_uri(reverse("api-knowledge-job", args=[job.pk]))},
            status=status.HTTP_202_ACCEPTED,
        )


class IngestionJobDetailView(APIView):
    permission_classes = [IsAuthenticated, CanManageKnowledge]

    def get(self, request, job_id):
        return Response(job_as_dict(_get_or_404(IngestionJob, job_id, "ingestion job")))
