from django.core.management.base import BaseCommand, CommandError

from aigc_saas.accounts.models import ApiKey
from aigc_saas.accounts.services import revoke_api_key


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (the 8 characters after `aigc_`)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("prefix")

    def handle(self, prefix: str, **options) -> None:
        key = ApiKey.objects.filter(prefix=prefix.removeprefix("aigc_").split("_")[0]).first()
        if key is None:
            raise CommandError(f"`prefix`: no API key with prefix {prefix!r}")
        revoke_api_key(key)
        self.stdout.write(f"revoked {key.prefix} ({key.name}) of tenant {key.tenant.slug}")
