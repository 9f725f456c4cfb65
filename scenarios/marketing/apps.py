from django.apps import AppConfig


class MarketingConfig(AppConfig):
    name = "scenarios.marketing"
    label = "scenarios_marketing"
