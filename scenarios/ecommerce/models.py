"""The ecommerce scenario's templates and recipes: proxies, so the admin has a ecommerce section of its own."""

from scenarios.core.models import Recipe, Template
from scenarios.core.proxies import ScenarioManager


class EcommerceTemplate(Template):
    objects = ScenarioManager("ecommerce")

    class Meta:
        proxy = True
        verbose_name = "ecommerce template"

    def save(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.scenario = "ecommerce"
        super().save(*args, **kwargs)


class EcommerceRecipe(Recipe):
    objects = ScenarioManager("ecommerce")

    class Meta:
        proxy = True
        verbose_name = "ecommerce recipe"
