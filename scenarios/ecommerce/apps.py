from django.apps import AppConfig


class EcommerceConfig(AppConfig):
    name = "scenarios.ecommerce"
    label = "scenarios_ecommerce"
