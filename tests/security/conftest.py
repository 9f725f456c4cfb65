"""The scenario catalogue and the tiny media models, fixtures shared with the scenario and /v1 tests."""

from tests.openai_compat.conftest import media  # noqa: F401
from tests.scenarios.conftest import catalogue  # noqa: F401
