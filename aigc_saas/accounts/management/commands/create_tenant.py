from django.core.management.base import BaseCommand, CommandError

from aigc_saas.accounts.services import TenantExists, create_api_key, create_tenant


class Command(BaseCommand):
    help = "Create a tenant (organisation), optionally with a first API key whose secret is printed once."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("name")
        parser.add_argument("--slug")
        parser.add_argument("--with-key", metavar="KEY_NAME", help="also issue an API key with this name")

    def handle(self, name: str, slug: str | None, with_key: str | None, **options) -> None:
        try:
            tenant = create_tenant(name, slug)
        except (TenantExists, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"tenant {tenant.slug} created ({tenant.id})")
        if with_key:
            key, raw = create_api_key(tenant, with_key)
            self.stdout.write(f"API key {key.name!r} (shown once, store it now): {raw}")
