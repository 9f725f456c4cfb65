from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "aigc_saas.usage"
    label = "usage"
    verbose_name = "Usage"
