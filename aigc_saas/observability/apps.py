from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "aigc_saas.observability"
    label = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from celery import signals as celery_signals
        from django.db.models.signals import post_save

        from aigc_saas.jobs.models import Job
        from aigc_saas.jobs.signals import job_finished
        from aigc_saas.observability import recording, worker
        from aigc_saas.observability.logging import quiet_progress_bars, set_tenant_resolver

        quiet_progress_bars()  # before any process of ours imports huggingface_hub, transformers or diffusers
        set_tenant_resolver(recording.tenant_of_job)
        post_save.connect(recording.job_submitted, sender=Job, dispatch_uid="aigc-metrics-submitted")
        job_finished.connect(recording.job_finished, dispatch_uid="aigc-metrics-finished")
        celery_signals.worker_ready.connect(worker.start_exporter, dispatch_uid="aigc-metrics-exporter")
        celery_signals.worker_process_init.connect(worker.start_sampler, dispatch_uid="aigc-metrics-sampler")
        celery_signals.worker_process_shutdown.connect(worker.process_shutdown, dispatch_uid="aigc-metrics-dead")
        celery_signals.task_prerun.connect(worker.task_prerun, dispatch_uid="aigc-log-bind-job")
        celery_signals.task_postrun.connect(worker.task_postrun, dispatch_uid="aigc-log-unbind-job")
