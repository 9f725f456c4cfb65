from django.core.management.base import BaseCommand, CommandError

from aigc_saas.accounts.models import Tenant
from aigc_saas.accounts.services import create_api_key


class Command(BaseCommand):
    help = "Issue an API key for a tenant; the secret is printed once and only its hash is stored."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("tenant", help="tenant slug")
        parser.add_argument("--name", default="cli")

    def handle(self, tenant: str, name: str, **options) -> None:
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"`tenant`: no tenant with slug {tenant!r}")
        key, raw = create_api_key(found, name)
        self.stdout.write(f"prefix: {key.prefix}")
        self.stdout.write(raw)
