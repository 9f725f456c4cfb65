from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from aigc_saas.plugins.scaffold import MODALITIES, ScaffoldError, package_names, write_plugin_package


class Command(BaseCommand):
    help = "Write a new generator plugin package (pyproject with the entry point, plugin class, contract-kit test)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("name", help="The plugin's name, as jobs will ask for it (e.g. `my-upscaler`).")
        parser.add_argument("--directory", default=".", help="Where to create the package folder (default: here).")
        parser.add_argument("--modality", choices=MODALITIES, default="text", help="What the plugin produces.")

    def handle(self, name: str, directory: str, modality: str, **options) -> None:
        try:
            root = write_plugin_package(name, Path(directory), modality)
        except ScaffoldError as exc:
            raise CommandError(str(exc)) from None
        names = package_names(name)
        self.stdout.write(f"Created {names['distribution']} in {root}")
        self.stdout.write(f"  plugin class: src/{names['module']}/__init__.py ({names['class_name']})")
        self.stdout.write(f"  next: cd {root} && pip install -e '.[test]' && pytest && python manage.py sync_plugins")
