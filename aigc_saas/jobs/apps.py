from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "aigc_saas.jobs"
    label = "jobs"
    verbose_name = "Generation jobs"
