"""The marketing scenario's templates and recipes: proxies, so the admin has a marketing section of its own."""

from scenarios.core.models import Recipe, Template
from scenarios.core.proxies import ScenarioManager


class MarketingTemplate(Template):
    objects = ScenarioManager("marketing")

    class Meta:
        proxy = True
        verbose_name = "marketing template"

    def save(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.scenario = "marketing"
        super().save(*args, **kwargs)


class MarketingRecipe(Recipe):
    objects = ScenarioManager("marketing")

    class Meta:
        proxy = True
        verbose_name = "marketing recipe"
