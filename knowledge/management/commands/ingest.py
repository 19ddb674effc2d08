"""manage.py ingest PATH... --collection NAME [--audience customer|internal]

Ingests files (directories are searched recursively for supported types) into a collection,
with a plain-text progress bar and a per-file error summary. Exits 1 if any file failed;
the other files are still ingested."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from knowledge.models import Audience, IngestionFileStatus, IngestionSource
from knowledge.parsers import EXTENSIONS
from knowledge.services import collection_ensure, ingestion_job_create_from_paths, ingestion_job_run

BAR_WIDTH = 30


def progress_bar(done: int, total: int, chunks: int, width: int = BAR_WIDTH) -> str:
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files, {chunks} chunks"


class Command(BaseCommand):
    help = "Ingest files (PDF, HTML, Markdown, text, FAQ CSV/JSON) into a knowledge collection."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="files or directories (searched recursively)")
        parser.add_argument("--collection", required=True, help="collection name (created if missing)")
        parser.add_argument("--audience", choices=Audience.values, default=None,
                            help="audience of a new collection (default customer); must match an existing one")
        parser.add_argument("--batch-size", type=int, default=10)

    def _collect(self, raw_paths: list[str]) -> list[Path]:
        files: list[Path] = []
        for raw in raw_paths:
            path = Path(raw)
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
            else:
                files.append(path)  # a missing or unsupported file is reported as that file's failure
        return list(dict.fromkeys(p.resolve() for p in files))

    def handle(self, *args, **options):
        files = self._collect(options["paths"])
        if not files:
            raise CommandError("No supported files found in the given paths.")
        audience = options["audience"]
        collection = collection_ensure(name=options["collection"], audience=audience or Audience.CUSTOMER)
        if audience and collection.audience != audience:
            raise CommandError(f"Collection {collection.name!r} exists with audience {collection.audience!r}, "
                               f"not {audience!r}.")
        job = ingestion_job_create_from_paths(collection=collection, paths=files, source=IngestionSource.COMMAND)
        interactive = self.stdout.isatty()

        def on_progress(job):
            line = progress_bar(job.processed_files, job.total_files, job.chunk_count)
            if interactive:
                self.stdout.write("\r" + line, ending="")
                self.stdout.flush()
            else:
                self.stdout.write(line)

        self.stdout.write(f"Ingesting {len(files)} file(s) into {collection.name!r} ({collection.audience}), "
                          f"job {job.pk}")
        job = ingestion_job_run(job_id=job.pk, batch_size=options["batch_size"], on_progress=on_progress)
        if interactive:
            self.stdout.write("")
        done = job.files.filter(status=IngestionFileStatus.DONE).count()
        self.stdout.write(f"{done} ingested, {job.skipped_files} unchanged, {job.failed_files} failed, "
                          f"{job.chunk_count} chunks.")
        failures = list(job.files.filter(status=IngestionFileStatus.FAILED).order_by("position"))
        if failures:
            self.stderr.write("Errors:")
            for f in failures:
                self.stderr.write(f"  {f.local_path or f.name}: {f.error}")
            raise CommandError(f"{len(failures)} of {job.total_files} file(s) failed.", returncode=1)
