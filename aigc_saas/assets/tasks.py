"""Celery tasks take ids, are safe to run twice, and only call services."""

from celery import shared_task

from aigc_saas.assets import services


@shared_task(name="aigc.sweep_expired_assets")
def sweep_expired_assets() -> int:
    return services.sweep_expired_assets()
