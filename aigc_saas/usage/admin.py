"""The admin's Usage page: totals per tenant, day and generator, and the same rows as CSV."""

from __future__ import annotations

import csv
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from aigc_saas.accounts.models import Tenant
from aigc_saas.errors import InvalidInput
from aigc_saas.usage.metering import USAGE_FIELDS
from aigc_saas.usage.models import UsageSummary
from aigc_saas.usage.services import COUNT_FIELDS, daily_totals, parse_range

COLUMNS = ("date", "tenant", "generator", *COUNT_FIELDS, *USAGE_FIELDS)


@admin.register(UsageSummary)
class UsageSummaryAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Usage is derived from jobs: whoever may view jobs may view their totals.
        return request.user.is_active and request.user.is_staff and request.user.has_perm("jobs.view_job")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        slug = request.GET.get("tenant", "").strip()
        error, rows = "", []
        try:
            start, end = parse_range(request.GET.get("since") or None, request.GET.get("until") or None)
            tenant_id = None
            if slug:
                tenant = Tenant.objects.filter(slug=slug).first()
                if tenant is None:
                    raise InvalidInput(f"`tenant`: no tenant with slug {slug!r}")
                tenant_id = tenant.pk
            rows = daily_totals(start, end, tenant_id, per_tenant=True)
        except InvalidInput as exc:
            error = exc.message
            start = end = None
        if request.GET.get("format") == "csv" and not error:
            return self.csv_response(rows, start, end)
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage",
            "columns": COLUMNS,
            "rows": [[row[c] for c in COLUMNS] for row in rows],
            "since": start.isoformat() if start else request.GET.get("since", ""),
            "until": end.isoformat() if end else request.GET.get("until", ""),
            "tenant": slug,
            "error": error,
            "opts": self.model._meta,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/usage/summary.html", context)

    @staticmethod
    def csv_response(rows: list[dict[str, Any]], start: Any, end: Any) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{start}-{end}.csv"'
        writer = csv.writer(response)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([row[c] for c in COLUMNS])
        return response
