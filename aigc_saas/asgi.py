import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aigc_saas.settings")
django.setup(set_prefix=False)

from aigc_saas.asgi_handler import ASGIHandler  # noqa: E402 - Django is set up first

application = ASGIHandler()
