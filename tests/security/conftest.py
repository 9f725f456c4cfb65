"""The scenario catalogue fixture, shared with the scenario tests."""

from tests.scenarios.conftest import catalogue  # noqa: F401
