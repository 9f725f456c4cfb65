from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "aigc_saas.webhooks"
    label = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from aigc_saas.webhooks import tasks  # noqa: F401 - connects the delivery task to `delivery_due`
