"""Public testing helpers for plugin authors: the contract kit and tiny real models.

`from generators.testing import PluginContract, check_plugin` — loaded lazily, so importing the tiny-model
builders does not import pytest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ContractReport", "ContractViolation", "PluginContract", "check_plugin"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from generators.testing import contract

        return getattr(contract, name)
    raise AttributeError(f"module 'generators.testing' has no attribute {name!r}")
