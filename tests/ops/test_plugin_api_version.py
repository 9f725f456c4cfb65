"""Plugins declare the plugin-API version they target; a mismatch is a reported problem, never a crash."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest

from generators import registry as registry_module
from generators.base import PLUGIN_API_VERSION, Generator
from generators.registry import ENTRY_POINT_GROUP, api_version_problem, contract_problems, discover
from generators.text_transformers import TextGenerator


class FutureMajor(TextGenerator):
    name = "future-major"
    api_version = "2.0"


class NewerMinor(TextGenerator):
    name = "newer-minor"
    api_version = "1.7"


class Garbled(TextGenerator):
    name = "garbled-version"
    api_version = 1  # type: ignore[assignment]


class OldMajor(TextGenerator):
    name = "old-major"
    api_version = "0.9"


def entry(name: str, cls: type) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{cls.__name__}", group=ENTRY_POINT_GROUP)


def test_the_platform_version_is_major_minor_and_plugins_default_to_1_0() -> None:
    assert PLUGIN_API_VERSION == "1.0"
    assert Generator.api_version == "1.0"  # plugins written before the field existed
    assert api_version_problem(PLUGIN_API_VERSION) is None


def test_mismatched_plugins_are_skipped_with_a_reason_and_the_rest_load() -> None:
    found = discover(
        eps=[
            entry("future-major", FutureMajor),
            entry("newer-minor", NewerMinor),
            entry("garbled-version", Garbled),
            EntryPoint(name="text", value="generators.text_transformers:TextGenerator", group=ENTRY_POINT_GROUP),
        ]
    )

    assert list(found.plugins) == ["transformers-text"]
    problems = {p.entry_point.split(" = ")[0]: p for p in found.problems}
    assert {name: p.code for name, p in problems.items()} == {
        "future-major": "api_version_mismatch",
        "newer-minor": "api_version_mismatch",
        "garbled-version": "api_version_mismatch",
    }
    assert "targets plugin API 2.0; this platform implements 1.0" in problems["future-major"].message
    assert "newer than this platform's 1.0: upgrade aigc-saas" in problems["newer-minor"].message
    assert "'MAJOR.MINOR'" in problems["garbled-version"].message


def test_the_contract_kit_reports_the_mismatch_too() -> None:
    assert any("targets plugin API 2.0" in problem for problem in contract_problems(FutureMajor))
    assert contract_problems(TextGenerator) == []


def test_a_deprecated_major_is_still_served_with_a_warning(monkeypatch, caplog) -> None:  # noqa: ANN001
    assert discover(eps=[entry("old-major", OldMajor)]).problems[0].code == "api_version_mismatch"
    monkeypatch.setattr(registry_module, "DEPRECATED_API_MAJORS", frozenset({0}))

    with caplog.at_level(logging.WARNING, logger="generators.registry"):
        found = discover(eps=[entry("old-major", OldMajor)])

    assert "old-major" in found.plugins and found.problems == []
    assert "targets deprecated plugin API 0.9" in caplog.text


@pytest.mark.parametrize("declared", ["1.0", "1.00"])
def test_equal_versions_are_accepted_whatever_the_padding(declared: str) -> None:
    assert api_version_problem(declared) is None
