from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "aigc_saas.jobs"
    label = "jobs"
    verbose_name = "Generation jobs"

    def ready(self) -> None:
        from aigc_saas.jobs import tasks  # noqa: F401 - connects the broker doorbell to `job_queued`
