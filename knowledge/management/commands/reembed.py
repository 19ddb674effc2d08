"""manage.py reembed [--status | --cancel | --drop-retired] [--batch-size N]

Re-embeds every chunk with the configured embedding model (``EMBEDDINGS``,
``EMBEDDINGS_OPENAI_MODEL``) into a new space beside the active one, with a progress bar,
then switches searches over to it. Searches keep using the old space until the switch.
Run it again to resume an interrupted build."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from knowledge.embedding_spaces import (
    ReembedError,
    active_space,
    reembed_cancel,
    reembed_run,
    reembed_start,
    spaces_drop_retired,
)
from knowledge.embeddings import configured_spec
from knowledge.management.commands.ingest import BAR_WIDTH
from knowledge.models import EmbeddingSpace, EmbeddingSpaceStatus


def space_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} chunks"


class Command(BaseCommand):
    help = "Re-embed the knowledge base with the configured embedding model and switch searches over."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--status", action="store_true", help="list the embedding spaces and exit")
        group.add_argument("--cancel", action="store_true", help="give up the build under way")
        group.add_argument("--drop-retired", action="store_true",
                           help="delete the vectors and indexes of retired spaces")
        parser.add_argument("--batch-size", type=int, default=256)

    def handle(self, *args, **options):
        if options["status"]:
            for space in EmbeddingSpace.objects.order_by("-created_at"):
                self.stdout.write(f"{space.status:9} {space.spec}  {space.embedded_chunks}/{space.total_chunks} "
                                  f"chunks  created {space.created_at:%Y-%m-%d %H:%M}"
                                  + (f"  error: {space.error}" if space.error else ""))
            self.stdout.write(f"configured: {configured_spec()}")
            return
        if options["drop_retired"]:
            dropped = spaces_drop_retired()
            self.stdout.write(f"Dropped the vectors of {len(dropped)} space(s).")
            return
        building = EmbeddingSpace.objects.filter(status=EmbeddingSpaceStatus.BUILDING).first()
        if options["cancel"]:
            if building is None:
                raise CommandError("No re-embedding is under way.")
            reembed_cancel(space=building)
            self.stdout.write(f"Cancelled re-embedding with {building.spec}.")
            return
        if building is None:
            try:
                building = reembed_start(dispatch=False)
            except ReembedError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Re-embedding {building.total_chunks} chunks with {building.spec} "
                              f"(searches use {active_space(fresh=True).spec} until the switch).")
        else:
            self.stdout.write(f"Resuming re-embedding with {building.spec}.")
        interactive = self.stdout.isatty()

        def on_progress(space):
            line = space_bar(space.embedded_chunks, space.total_chunks)
            if interactive:
                self.stdout.write("\r" + line, ending="")
                self.stdout.flush()
            else:
                self.stdout.write(line)

        space = reembed_run(space_id=building.pk, batch_size=options["batch_size"], on_progress=on_progress)
        if interactive:
            self.stdout.write("")
        if space.status == EmbeddingSpaceStatus.ACTIVE:
            self.stdout.write(f"Searches now use {space.spec}. Run `manage.py reembed --drop-retired` to free "
                              "the old vectors.")
        else:
            raise CommandError(f"The space is {space.status}; run the command again to resume.")
