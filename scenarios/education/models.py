"""The education scenario's templates and recipes: proxies, so the admin has a education section of its own."""

from scenarios.core.models import Recipe, Template
from scenarios.core.proxies import ScenarioManager


class EducationTemplate(Template):
    objects = ScenarioManager("education")

    class Meta:
        proxy = True
        verbose_name = "education template"

    def save(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.scenario = "education"
        super().save(*args, **kwargs)


class EducationRecipe(Recipe):
    objects = ScenarioManager("education")

    class Meta:
        proxy = True
        verbose_name = "education recipe"
