from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "scenarios.core"
    label = "scenarios_core"
