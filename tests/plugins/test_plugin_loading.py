"""Robust loading: blocked, broken and clashing plugins are skipped and reported; secrets stay secret."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest
from pydantic import Field, SecretStr

from aigc_saas.errors import InvalidInput
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from aigc_saas.plugins.services import (
    config_fingerprint,
    effective_config,
    registry,
    reload_registry,
    set_plugin_secrets,
    sync_plugins,
    validate_record,
)
from generators.registry import ENTRY_POINT_GROUP, discover, secret_config_fields
from generators.text_transformers import TextConfig, TextGenerator

pytestmark = pytest.mark.django_db


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


class HostedConfig(TextConfig):
    api_token: SecretStr | None = Field(default=None, description="Token for the hosted model's API.")


class HostedText(TextGenerator):
    """Text from a hosted model (a stand-in that keeps the built-in's code)."""

    name = "hosted-text"
    Config = HostedConfig


def test_a_plugin_that_raises_at_import_or_exits_is_skipped_and_logged(caplog) -> None:  # noqa: ANN001
    eps = [
        entry_point("missing", "no_such_module_anywhere:Plugin"),
        entry_point("exits", "sys:exit"),  # loads fine but is not a Generator
        entry_point("text", "generators.text_transformers:TextGenerator"),
    ]

    with caplog.at_level(logging.WARNING, logger="generators.registry"):
        found = discover(eps=eps)

    assert list(found.plugins) == ["transformers-text"]
    assert {p.entry_point.split(" = ")[0]: p.code for p in found.problems} == {
        "missing": "import_failed",
        "exits": "invalid_contract",
    }
    assert "generator plugin skipped (import_failed): missing = no_such_module_anywhere:Plugin" in caplog.text


def test_a_name_clash_keeps_the_first_and_reports_the_second() -> None:
    eps = [
        entry_point("a", "generators.text_transformers:TextGenerator"),
        entry_point("b", "tests.plugins.test_plugin_loading:HostedText"),
        entry_point("c", "tests.plugins.test_plugin_loading:HostedText"),
    ]

    found = discover(eps=eps)

    assert sorted(found.plugins) == ["hosted-text", "transformers-text"]
    assert [(p.code, p.message) for p in found.problems] == [
        ("name_clash", "name 'hosted-text' is already taken by tests.plugins.test_plugin_loading:HostedText (unknown)")
    ]


def test_an_operator_blocks_a_plugin_by_name_in_settings(settings) -> None:  # noqa: ANN001
    settings.AIGC_BLOCKED_PLUGINS = ["transformers-text"]
    try:
        reload_registry()
        sync_plugins()

        assert "transformers-text" not in registry()
        assert PluginRecord.objects.get(name="transformers-text").installed is False
        problem = PluginProblemRecord.objects.get(code="blocked")
        assert "blocked by the AIGC_BLOCKED_PLUGINS setting" in problem.message
    finally:
        settings.AIGC_BLOCKED_PLUGINS = []
        reload_registry()
        sync_plugins()


def test_sync_records_distribution_and_version_of_each_plugin() -> None:
    reload_registry()
    sync_plugins()

    record = PluginRecord.objects.get(name="transformers-text")

    assert (record.distribution, record.version) == ("aigc-saas", registry().get("transformers-text").version)


def test_secret_config_fields_are_found_by_type() -> None:
    assert secret_config_fields(HostedConfig) == ["api_token"]
    assert secret_config_fields(TextConfig) == []


@pytest.fixture
def hosted_record(monkeypatch) -> Iterator[PluginRecord]:  # noqa: ANN001
    """A plugin with a secret config field, installed through the registry's own discovery."""
    found = discover(eps=[entry_point("hosted-text", "tests.plugins.test_plugin_loading:HostedText")])
    monkeypatch.setattr("aigc_saas.plugins.services.discover", lambda **kwargs: found)
    reload_registry()
    sync_plugins()
    yield PluginRecord.objects.get(name="hosted-text")
    monkeypatch.undo()
    reload_registry()


def test_a_secret_is_stored_apart_and_passed_only_to_the_plugin(hosted_record: PluginRecord) -> None:
    set_plugin_secrets(hosted_record, {"api_token": "tok-live-123"})
    hosted_record.refresh_from_db()

    config = effective_config(hosted_record, HostedText)

    assert config.api_token.get_secret_value() == "tok-live-123"
    assert hosted_record.config == {}
    assert "tok-live-123" not in repr(config) + config.model_dump_json()


def test_changing_a_secret_changes_the_config_fingerprint(hosted_record: PluginRecord) -> None:
    set_plugin_secrets(hosted_record, {"api_token": "first"})
    hosted_record.refresh_from_db()
    first = config_fingerprint(effective_config(hosted_record, HostedText))
    set_plugin_secrets(hosted_record, {"api_token": "second"})
    hosted_record.refresh_from_db()

    assert config_fingerprint(effective_config(hosted_record, HostedText)) != first


def test_a_secret_typed_into_the_plain_config_is_refused(hosted_record: PluginRecord) -> None:
    hosted_record.config = {"api_token": "oops"}

    with pytest.raises(InvalidInput, match=r"`config`: \['api_token'\] are secret fields"):
        validate_record(hosted_record)


def test_clearing_a_secret_and_naming_an_unknown_one(hosted_record: PluginRecord) -> None:
    set_plugin_secrets(hosted_record, {"api_token": "tok"})
    assert set_plugin_secrets(hosted_record, {"api_token": None}).secrets == {}

    with pytest.raises(InvalidInput, match=r"\['password'\] are not secret fields of 'hosted-text'"):
        set_plugin_secrets(hosted_record, {"password": "x"})


def test_admin_never_renders_a_stored_secret_and_blank_keeps_it(admin_client, hosted_record: PluginRecord) -> None:  # noqa: ANN001
    set_plugin_secrets(hosted_record, {"api_token": "tok-never-shown"})
    url = f"/admin/plugins/pluginrecord/{hosted_record.pk}/change/"

    page = admin_client.get(url).content.decode()
    saved = admin_client.post(url, {"enabled": "on", "config": "{}", "default_params": "{}", "secret__api_token": ""})

    assert "tok-never-shown" not in page and 'name="secret__api_token"' in page
    assert saved.status_code == 302
    hosted_record.refresh_from_db()
    assert hosted_record.secrets == {"api_token": "tok-never-shown"}
