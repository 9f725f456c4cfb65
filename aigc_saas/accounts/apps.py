from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "aigc_saas.accounts"
    label = "accounts"
    verbose_name = "Tenants and API keys"
