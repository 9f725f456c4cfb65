from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "scenarios.core"
    label = "scenarios_core"
    verbose_name = "Scenarios: templates, recipes and runs"

    def ready(self) -> None:
        from aigc_saas.jobs.signals import job_finished
        from scenarios.core.receivers import advance_run_of_job

        job_finished.connect(advance_run_of_job, dispatch_uid="scenarios.advance_run_of_job")
