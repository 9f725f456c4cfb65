"""The Django project: settings, urls, the Celery app and the core apps (accounts, jobs, plugins)."""

from aigc_saas.celery import app as celery_app

__all__ = ["celery_app"]
