from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "aigc_saas.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from aigc_saas.audit import receivers

        receivers.connect()
