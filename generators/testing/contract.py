"""The contract kit: checks any generator plugin, built-in or third-party, against the platform's contract.

Primary use, in a plugin package's own tests::

    from generators.testing.contract import PluginContract

    class TestMyPlugin(PluginContract):
        plugin = MyPlugin
        sample_params = {"prompt": "a lighthouse at dusk"}

pytest collects the inherited `test_*` methods. Each failure lists what is wrong and how to fix it.
Outside pytest, `check_plugin(MyPlugin, sample_params={...})` runs the same checks and returns a report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from generators.base import GenerationResult, Generator, LocalContext
from generators.testing.batch_checks import (
    batch_cancellation_problems,
    batch_seed_problems,
    companion_params,
    engine_problems,
)
from generators.testing.checks import (
    CPU,
    HEAVY_MODULES,
    ContractViolation,
    asset_problems,
    batch_problems,
    cancellation_problems,
    declaration_problems,
    fail_on,
    import_problems,
    invalid_params_problems,
    metadata_problems,
    output_problems,
    params_problems,
    params_with_inputs,
    progress_problems,
)
from hardware import DeviceChoice

__all__ = [
    "HEAVY_MODULES",
    "ContractReport",
    "ContractViolation",
    "PluginContract",
    "asset_problems",
    "batch_cancellation_problems",
    "batch_problems",
    "batch_seed_problems",
    "cancellation_problems",
    "check_plugin",
    "companion_params",
    "declaration_problems",
    "engine_problems",
    "import_problems",
    "invalid_params_problems",
    "metadata_problems",
    "output_problems",
    "params_problems",
    "progress_problems",
]

# --- outside pytest --------------------------------------------------------------------------------------------


@dataclass
class ContractReport:
    plugin: str
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def raise_for_problems(self) -> None:
        for check, problems in self.problems.items():
            fail_on(problems, f"{self.plugin}: {check}")


def check_plugin(
    cls: type[Generator],
    sample_params: dict[str, Any],
    config: dict[str, Any] | None = None,
    *,
    device: DeviceChoice = CPU,
    heavy_modules: tuple[str, ...] = HEAVY_MODULES,
    sample_inputs: dict[str, bytes] | None = None,
) -> ContractReport:
    """Every check of the kit, without pytest; `report.raise_for_problems()` turns it into a failure."""
    report = ContractReport(getattr(cls, "name", repr(cls)))
    report.problems["declaration"] = declaration_problems(cls)
    if report.problems["declaration"]:
        return report
    report.problems["params"] = params_problems(cls, sample_params)
    report.problems["invalid params"] = invalid_params_problems(cls, sample_params)
    report.problems["asset inputs"] = asset_problems(cls, sample_params, sample_inputs)
    if report.problems["asset inputs"]:
        return report
    report.problems["import weight"] = import_problems(cls, heavy_modules)
    plugin_config = cls.validate_config(config or {})
    plugin = cls(plugin_config)
    plugin.setup(device)
    try:
        params = params_with_inputs(cls, sample_params, sample_inputs)
        ctx = LocalContext(device)
        result = plugin.generate(params, ctx)
        report.problems["outputs"] = output_problems(cls, result)
        if isinstance(result, GenerationResult):
            report.problems["metadata"] = metadata_problems(cls, result, params, ctx, plugin_config)
        report.problems["progress"] = progress_problems(ctx.reports)
        report.problems["cancellation"] = cancellation_problems(plugin, params, device)
        # The inherited one-by-one generate_batch is checked too: batch_key and the outputs are the plugin's own.
        report.problems["batch generation"] = batch_problems(plugin, params, device)
        # Items of one pass are separate jobs: each keeps its own cancel and seed, whatever its companions do.
        report.problems["batch cancellation"] = batch_cancellation_problems(
            plugin, sample_params, device, sample_inputs
        )
        report.problems["batch seeds"] = batch_seed_problems(plugin, sample_params, device, sample_inputs)
        report.problems["engine runner"] = engine_problems(plugin, sample_params, device, sample_inputs)
    finally:
        plugin.teardown()
    return report


# --- the pytest interface --------------------------------------------------------------------------------------


class PluginContract:
    """Subclass as `TestXxx`, set `plugin` and `sample_params` (and `config`); pytest runs the whole kit.

    To build the config from other fixtures (a model downloaded or built once per session), override the
    class-scoped `contract_config` fixture (a classmethod) instead of setting `config`.
    """

    plugin: ClassVar[type[Generator]]
    sample_params: ClassVar[dict[str, Any]]
    config: ClassVar[dict[str, Any]] = {}
    device: ClassVar[DeviceChoice] = CPU
    heavy_modules: ClassVar[tuple[str, ...]] = HEAVY_MODULES
    # (params, field) pairs that must be refused, on top of the cases the kit derives from the schema.
    invalid_params: ClassVar[list[tuple[dict[str, Any], str]]] = []
    # File bytes for each asset param the sample names: decoded as the worker decodes them before `generate`.
    sample_inputs: ClassVar[dict[str, bytes]] = {}

    @pytest.fixture(scope="class")
    @classmethod
    def contract_config(cls) -> dict[str, Any]:
        return dict(cls.config)

    @pytest.fixture(scope="class")
    @classmethod
    def loaded_plugin(cls, contract_config: dict[str, Any]) -> Iterator[Generator]:
        fail_on(declaration_problems(cls.plugin), f"{cls.plugin.__name__} breaks the contract")
        plugin = cls.plugin(cls.plugin.validate_config(contract_config))
        plugin.setup(cls.device)
        yield plugin
        plugin.teardown()

    @pytest.fixture(scope="class")
    @classmethod
    def sample_run(cls, loaded_plugin: Generator) -> tuple[GenerationResult, LocalContext, BaseModel]:
        params = params_with_inputs(cls.plugin, cls.sample_params, cls.sample_inputs)
        ctx = LocalContext(cls.device)
        return loaded_plugin.generate(params, ctx), ctx, params

    def _params(self) -> BaseModel:
        return params_with_inputs(self.plugin, self.sample_params, self.sample_inputs)

    def test_declares_a_sound_contract(self) -> None:
        fail_on(declaration_problems(self.plugin), f"{self.plugin.__name__} breaks the contract")

    def test_params_are_bounded_documented_and_valid_json_schema(self) -> None:
        fail_on(params_problems(self.plugin, self.sample_params), f"{self.plugin.__name__}.Params")

    def test_invalid_params_raise_params_invalid(self) -> None:
        problems = invalid_params_problems(self.plugin, self.sample_params, self.invalid_params)
        fail_on(problems, f"{self.plugin.__name__}.validate_params")

    def test_asset_inputs_are_typed_and_their_samples_decode(self) -> None:
        problems = asset_problems(self.plugin, self.sample_params, self.sample_inputs)
        fail_on(problems, f"{self.plugin.__name__} asset inputs")

    def test_module_imports_without_heavy_libraries(self) -> None:
        fail_on(import_problems(self.plugin, self.heavy_modules), f"importing {self.plugin.__module__}")

    def test_generates_outputs_of_its_modality(self, sample_run: tuple) -> None:
        result, _, _ = sample_run
        fail_on(output_problems(self.plugin, result), f"{self.plugin.__name__}.generate output")

    def test_records_the_metadata_the_platform_keeps(self, sample_run: tuple, loaded_plugin: Generator) -> None:
        result, ctx, params = sample_run
        problems = metadata_problems(self.plugin, result, params, ctx, loaded_plugin.config)
        fail_on(problems, f"{self.plugin.__name__}.generate metadata")

    def test_reports_monotonic_progress(self, sample_run: tuple) -> None:
        _, ctx, _ = sample_run
        fail_on(progress_problems(ctx.reports), f"{self.plugin.__name__}.generate progress")

    def test_honours_a_cancel_request(self, loaded_plugin: Generator) -> None:
        problems = cancellation_problems(loaded_plugin, self._params(), self.device)
        fail_on(problems, f"{self.plugin.__name__}.generate cancellation")

    def test_batch_generation(self, loaded_plugin: Generator) -> None:
        """One result per item; one item's cancel and seed stay its own; an engine runner serves jobs apart.

        (One test, not four, so a plugin package's own contract run keeps its count across kit releases.)"""
        name, sample, inputs = self.plugin.__name__, self.sample_params, self.sample_inputs
        problems = [f"generate_batch: {p}" for p in batch_problems(loaded_plugin, self._params(), self.device)]
        problems += [
            f"generate_batch, one item cancelled: {p}"
            for p in batch_cancellation_problems(loaded_plugin, sample, self.device, inputs)
        ]
        problems += [
            f"generate_batch, seeds: {p}" for p in batch_seed_problems(loaded_plugin, sample, self.device, inputs)
        ]
        problems += [f"create_runner: {p}" for p in engine_problems(loaded_plugin, sample, self.device, inputs)]
        fail_on(problems, f"{name} batches and engine")
