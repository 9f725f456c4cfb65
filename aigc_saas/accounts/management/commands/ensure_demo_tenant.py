from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from aigc_saas.accounts.models import Tenant
from aigc_saas.accounts.services import authenticate_key, create_api_key, create_tenant


class Command(BaseCommand):
    help = "Create the demo tenant and its API key once; later runs print the same key from the local key file."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--key-file", default=str(settings.DATA_DIR / "demo-api-key"))

    def handle(self, key_file: str, **options) -> None:
        path = Path(key_file)
        tenant = Tenant.objects.filter(slug="demo").first() or create_tenant("Demo Company", "demo")
        raw = path.read_text().strip() if path.exists() else ""
        if not raw or authenticate_key(raw) is None or authenticate_key(raw).tenant_id != tenant.pk:
            _, raw = create_api_key(tenant, "demo")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(raw + "\n")
            path.chmod(0o600)
        self.stdout.write(raw)
