from django.core.management.base import BaseCommand

from aigc_saas.plugins.models import PluginProblemRecord
from aigc_saas.plugins.services import reload_registry, sync_plugins


class Command(BaseCommand):
    help = "Scan the `aigc_saas.generators` entry points and refresh the plugin records."

    def handle(self, **options) -> None:
        reload_registry()
        for record in sync_plugins():
            state = "enabled" if record.enabled else "disabled"
            self.stdout.write(f"{record.name:24} {record.modality:6} {state:8} {record.distribution} {record.version}")
        for problem in PluginProblemRecord.objects.all():
            self.stderr.write(f"skipped {problem.entry_point}: {problem.code}: {problem.message}")
