from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from aigc_saas.accounts.models import SCOPES, Tenant
from aigc_saas.accounts.services import create_api_key
from aigc_saas.audit.context import Actor, acting


class Command(BaseCommand):
    help = "Issue an API key for a tenant; the secret is printed once and only its hash is stored."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("tenant", help="tenant slug")
        parser.add_argument("--name", default="cli")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            metavar="SCOPE",
            help=f"what the key may do, repeatable or comma-separated: {', '.join(SCOPES)} (default: all)",
        )
        parser.add_argument("--expires-in-days", type=int, metavar="DAYS", help="the key stops working after DAYS days")

    def handle(self, tenant: str, name: str, scopes: list[str] | None, expires_in_days: int | None, **options) -> None:
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"`tenant`: no tenant with slug {tenant!r}")
        chosen = [s.strip() for item in scopes for s in item.split(",") if s.strip()] if scopes else None
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError(f"`--expires-in-days`: must be 1 or more, got {expires_in_days}")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            with acting(Actor(label="cli:create_api_key")):
                key, raw = create_api_key(found, name, scopes=chosen, expires_at=expires_at)
        except ValidationError as exc:
            raise CommandError("; ".join(m for msgs in exc.message_dict.values() for m in msgs)) from None
        self.stdout.write(f"prefix: {key.prefix}")
        self.stdout.write(f"scopes: {','.join(key.scopes)}")
        if key.expires_at:
            self.stdout.write(f"expires: {key.expires_at.isoformat()}")
        self.stdout.write(raw)
