from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PluginsConfig(AppConfig):
    name = "aigc_saas.plugins"
    label = "plugins"
    verbose_name = "Generator plugins"

    def ready(self) -> None:
        from aigc_saas.plugins.services import sync_plugins_after_migrate

        post_migrate.connect(sync_plugins_after_migrate, sender=self)
