"""A scenario app's own admin section: proxies of Template and Recipe filtered to that scenario."""

from __future__ import annotations

from django.db import models


class ScenarioManager(models.Manager):
    def __init__(self, scenario: str) -> None:
        super().__init__()
        self.scenario = scenario

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(scenario=self.scenario)

    def deconstruct(self):  # noqa: ANN201 - migrations rebuild the manager with its scenario
        return False, "scenarios.core.proxies.ScenarioManager", (self.scenario,), {}, None
