from scenarios.core.registry import ScenarioAppConfig


class EcommerceConfig(ScenarioAppConfig):
    default = True
    name = "scenarios.ecommerce"
    label = "scenarios_ecommerce"
    verbose_name = "Scenario: e-commerce"
    scenario = "ecommerce"
    scenario_title = "E-commerce"
    scenario_description = (
        "Product titles, descriptions and feature bullets, review and customer-service replies, FAQs and "
        "product images for an online shop."
    )
