"""The scenario API over real HTTP: catalogue browsing, variable validation, tenant-private templates."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

PRIVATE = {
    "scenario": "marketing",
    "slug": "weekly-special",
    "title": "Weekly special",
    "generator": "transformers-text",
    "prompts": {"prompt": "Announce this week's special: {{ dish }} for {{ price }}."},
    "variables": [
        {"name": "dish", "type": "string", "description": "The dish."},
        {"name": "price", "type": "string", "max_length": 20, "description": "Its price."},
    ],
    "sample_variables": {"dish": "lasagne", "price": "£9"},
}


def templates_of(api, scenario: str) -> dict[str, dict]:  # noqa: ANN001
    response = api.get(f"scenarios/{scenario}/templates", params={"page_size": 100})
    assert response.status_code == 200, response.text
    return {t["slug"]: t for t in response.json()["results"]}


def test_scenarios_list_the_installed_apps_with_their_catalogue(api, catalogue) -> None:  # noqa: ANN001
    scenarios = {s["slug"]: s for s in api.get("scenarios").json()}

    assert set(scenarios) == {"marketing", "ecommerce", "education"}
    assert all(s["templates"] >= 8 and s["recipes"] >= 1 for s in scenarios.values())


def test_template_detail_gives_its_variables_as_json_schema(api, catalogue) -> None:  # noqa: ANN001
    quiz = templates_of(api, "education")["quiz"]

    detail = api.get(quiz["url"]).json()

    schema = detail["variables_schema"]
    assert schema["required"] == ["topic"]
    assert schema["properties"]["questions"] == {
        "default": 5,
        "description": "Number of questions.",
        "maximum": 20,
        "minimum": 3,
        "type": "integer",
    }
    assert schema["additionalProperties"] is False
    assert detail["structured"] is True and detail["output_schema"]["required"] == ["title", "questions"]
    assert detail["versions"][0]["version"] == 1


def test_bad_variables_are_a_400_naming_the_variable(api, catalogue) -> None:  # noqa: ANN001
    reply = templates_of(api, "ecommerce")["review-reply"]

    response = api.post(
        f"{reply['url']}/runs",
        {"variables": {"review": "Great!", "rating": 7, "business": "Kiln & Co", "colour": "red"}},
    )

    assert response.status_code == 400
    fields = {f["field"]: f for f in response.json()["error"]["fields"]}
    assert set(fields) == {"variables.rating", "variables.colour"}
    assert "less than or equal to 5" in fields["variables.rating"]["message"]
    assert "unknown variable" in fields["variables.colour"]["message"]


def test_params_the_template_does_not_allow_are_refused(api, catalogue) -> None:  # noqa: ANN001
    slogan = templates_of(api, "marketing")["slogan-set"]

    response = api.post(f"{slogan['url']}/runs", {"variables": {"business": "Bright Smile"}, "params": {"prompt": "x"}})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "param_not_overridable"
    assert response.json()["error"]["fields"][0]["field"] == "params.prompt"


def test_a_tenant_private_template_is_invisible_to_other_tenants(api, other_api, catalogue) -> None:  # noqa: ANN001
    created = api.post("templates", PRIVATE)
    assert created.status_code == 201, created.text
    url = created.json()["url"]

    assert "weekly-special" in templates_of(api, "marketing")
    assert "weekly-special" not in templates_of(other_api, "marketing")
    assert other_api.get(url).status_code == 404
    assert other_api.post(f"{url}/runs", {"variables": {"dish": "soup", "price": "£4"}}).status_code == 404
    assert other_api.session.patch(other_api.url(url), json={"title": "Mine now"}).status_code == 404


def test_editing_a_private_template_creates_a_version_and_globals_are_read_only(api, catalogue) -> None:  # noqa: ANN001
    url = api.post("templates", PRIVATE).json()["url"]

    edited = api.session.patch(api.url(url), json={"prompts": {"prompt": "This week only: {{ dish }}, {{ price }}."}})
    again = api.session.patch(api.url(url), json={"prompts": {"prompt": "This week only: {{ dish }}, {{ price }}."}})
    aida = templates_of(api, "marketing")["ad-copy-aida"]
    refused = api.session.patch(api.url(aida["url"]), json={"title": "Hijacked"})

    assert edited.json()["version"] == 2 and again.json()["version"] == 2
    assert [v["version"] for v in edited.json()["versions"]] == [2, 1]
    assert refused.status_code == 403


def test_a_template_that_reaches_outside_its_variables_is_refused(api, catalogue) -> None:  # noqa: ANN001
    response = api.post("templates", {**PRIVATE, "prompts": {"prompt": "{{ dish.__class__.__mro__ }} {{ price }}"}})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "template_unsafe"
