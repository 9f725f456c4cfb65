from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from scenarios.core.catalogue import SeedError, default_directory, load_catalogue


class Command(BaseCommand):
    help = "Load the template and recipe catalogue; running it again changes nothing, an edited seed is a new version."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--path", type=Path, default=None, help=f"Catalogue folder (default {default_directory()})."
        )

    def handle(self, *args, path: Path | None = None, **options) -> None:  # noqa: ANN002, ANN003
        try:
            report = load_catalogue(path)
        except SeedError as exc:
            raise CommandError(str(exc)) from None
        for label, names in (("created", report.created), ("updated", report.updated)):
            for name in names:
                self.stdout.write(f"{label}: {name}")
        self.stdout.write(
            self.style.SUCCESS(
                f"catalogue: {len(report.created)} created, {len(report.updated)} updated, "
                f"{len(report.unchanged)} unchanged"
            )
        )
