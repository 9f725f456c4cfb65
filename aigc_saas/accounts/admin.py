from django import forms
from django.contrib import admin, messages

from aigc_saas.accounts.models import SCOPES, ApiKey, Membership, Tenant
from aigc_saas.accounts.services import create_api_key, revoke_api_key


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "max_jobs_per_day", "max_active_jobs", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["id", "created_at"]
    fieldsets = [
        (None, {"fields": ["id", "slug", "name", "is_active", "created_at"]}),
        ("Quotas", {"fields": ["max_jobs_per_day", "max_active_jobs"]}),
        (
            "Rate limits per API key (blank: the deployment's defaults)",
            {"fields": ["requests_per_second", "request_burst", "submissions_per_minute"]},
        ),
    ]
    inlines = [MembershipInline]
    actions = ["issue_api_key"]

    @admin.action(description="Issue a new API key (shown once)")
    def issue_api_key(self, request, queryset) -> None:  # noqa: ANN001
        for tenant in queryset:
            _, raw = create_api_key(tenant, name=f"admin-issued by {request.user}")
            self.message_user(
                request, f"New key for {tenant.slug} (copy it now, it is not stored): {raw}", messages.WARNING
            )


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(name, f"{name}: {what}") for name, what in SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "tenant", "prefix", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["tenant", "revoked_at"]
    search_fields = ["name", "prefix", "tenant__slug"]
    readonly_fields = ["tenant", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["tenant", "name", "prefix", "scopes", "expires_at", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False  # keys are issued from the tenant page or `manage.py create_api_key`, so the secret is shown once

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:  # noqa: ANN001
        for key in queryset:
            revoke_api_key(key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
