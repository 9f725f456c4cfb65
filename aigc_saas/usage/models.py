from aigc_saas.jobs.models import Job


class UsageSummary(Job):
    """A proxy so the admin has a "Usage" page: per-tenant, per-day, per-generator totals with a CSV export."""

    class Meta:
        proxy = True
        verbose_name = "usage summary"
        verbose_name_plural = "usage summaries"
