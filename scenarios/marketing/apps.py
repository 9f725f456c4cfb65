from scenarios.core.registry import ScenarioAppConfig


class MarketingConfig(ScenarioAppConfig):
    default = True
    name = "scenarios.marketing"
    label = "scenarios_marketing"
    verbose_name = "Scenario: marketing"
    scenario = "marketing"
    scenario_title = "Marketing"
    scenario_description = (
        "Ad copy, social posts, email campaigns, SEO snippets, slogans, campaign visuals and voice-overs "
        "for a small business that has no agency."
    )
