"""Scenarios are the installed apps whose AppConfig subclasses `ScenarioAppConfig`: install one, it is listed."""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import AppConfig, apps

from aigc_saas.errors import NotFound


class ScenarioAppConfig(AppConfig):
    """Base for a scenario app: the slug its templates and recipes are filed under, and how it is shown."""

    scenario: str
    scenario_title: str
    scenario_description: str


@dataclass(frozen=True)
class ScenarioInfo:
    slug: str
    title: str
    description: str
    app_label: str


def installed_scenarios() -> dict[str, ScenarioInfo]:
    return {
        config.scenario: ScenarioInfo(config.scenario, config.scenario_title, config.scenario_description, config.label)
        for config in apps.get_app_configs()
        if isinstance(config, ScenarioAppConfig)
    }


def get_scenario(slug: str) -> ScenarioInfo:
    found = installed_scenarios().get(slug)
    if found is None:
        raise NotFound(
            f"`scenario`: no scenario {slug!r}; installed: {sorted(installed_scenarios())}", code="unknown_scenario"
        )
    return found
