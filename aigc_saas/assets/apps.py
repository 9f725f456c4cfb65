from django.apps import AppConfig


class AssetsConfig(AppConfig):
    name = "aigc_saas.assets"
    label = "assets"
    verbose_name = "Input assets"
