"""`manage.py generate <plugin> key=value … [--output DIR] [--device cpu]`: one job in this process, no stack.

The `cog predict` of the platform: the plugin is loaded and run exactly as a worker would (the deployment's
config for it when the database has one, the hardware module's device choice), its text and files are written
to a folder, and the result and timings are printed. No Job row is made, nothing is queued.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from aigc_saas.errors import ServiceError
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.plugins.services import effective_config, registry
from generators.base import GeneratorConfig, LocalContext
from generators.errors import GeneratorError, ParamsInvalid
from generators.registry import UnknownGenerator
from hardware import DeviceUnavailable, select_device


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; a value that parses as JSON is taken as JSON (numbers, true, lists), else as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"`{pair}`: give params as key=value, e.g. prompt='a red mug' steps=4")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


class Command(BaseCommand):
    help = "Run one job of a generator plugin in this process and write its outputs to a folder."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("plugin", help="The generator's name, e.g. transformers-text.")
        parser.add_argument(
            "params", nargs="*", help="Params as key=value (JSON values allowed: steps=4, stop='[\"\\n\"]')."
        )
        parser.add_argument(
            "--output", default=None, help="Folder for the outputs (default: ./generated/<plugin>-<time>)."
        )
        parser.add_argument(
            "--device", default=None, help="cpu, cuda, cuda:1, mps (default: the hardware module's choice)."
        )
        parser.add_argument(
            "--dtype", default=None, help="float32, float16, bfloat16 (default: chosen for the device)."
        )
        parser.add_argument("--model", default=None, help="A model id or local path instead of the configured one.")

    def handle(self, plugin: str, params: list[str], **options: Any) -> None:
        try:
            info = registry().get(plugin)
        except UnknownGenerator as exc:
            raise CommandError(f"{exc.message}; installed: {sorted(registry().plugins)}") from None
        cls = info.cls
        try:
            validated = cls.validate_params(parse_params(params))
        except ParamsInvalid as exc:
            raise CommandError(f"invalid params: {exc.message}") from None
        config = self.config_for(plugin, cls)
        if options["model"]:
            config = config.model_copy(update={"model_id": options["model"]})
        try:
            device = select_device(cls.needs, forced_device=options["device"], forced_dtype=options["dtype"])
        except DeviceUnavailable as exc:
            raise CommandError(str(exc)) from None
        output = Path(options["output"] or f"generated/{plugin}-{time.strftime('%Y%m%d-%H%M%S')}")
        output.mkdir(parents=True, exist_ok=True)

        generator = cls(config)
        started = time.perf_counter()
        try:
            generator.setup(device)
        except GeneratorError as exc:
            raise CommandError(f"setup failed ({exc.code}): {exc.message}") from None
        loaded = time.perf_counter()
        ctx = LocalContext(device, on_progress=lambda f, m: self.stderr.write(f"  {f:5.0%} {m}"))
        try:
            result = generator.generate(validated, ctx)
        except GeneratorError as exc:
            raise CommandError(f"generation failed ({exc.code}): {exc.message}") from None
        finally:
            generator.teardown()
        done = time.perf_counter()

        written = []
        if result.text is not None:
            (output / "result.txt").write_text(result.text)
            written.append("result.txt")
        for out in result.files:
            (output / Path(out.filename).name).write_bytes(out.data)
            written.append(Path(out.filename).name)
        summary = {
            "plugin": plugin,
            "version": info.version,
            "model_id": config.model_id,
            "device": device.device,
            "dtype": device.dtype,
            "params": validated.model_dump(mode="json"),
            "text": result.text,
            "data": result.data,
            "metadata": result.metadata,
            "files": [
                {"filename": f.filename, "content_type": f.content_type, "bytes": len(f.data)} for f in result.files
            ],
            "timings": {"setup_seconds": round(loaded - started, 3), "generate_seconds": round(done - loaded, 3)},
            "output": str(output.resolve()),
        }
        (output / "result.json").write_text(json.dumps(summary, indent=2, default=str))
        written.append("result.json")
        self.stdout.write(json.dumps(summary, indent=2, default=str))
        self.stderr.write(
            f"{plugin} on {device.device} ({device.dtype}): setup {summary['timings']['setup_seconds']} s, "
            f"generate {summary['timings']['generate_seconds']} s; wrote {', '.join(written)} to {output}"
        )
        sys.stdout.flush()

    @staticmethod
    def config_for(plugin: str, cls: Any) -> GeneratorConfig:
        """The deployment's config (admin settings, secrets) when the database has the plugin, else its defaults."""
        try:
            record = PluginRecord.objects.filter(name=plugin).first()
        except DatabaseError:
            record = None  # no database here (not migrated): the plugin's own defaults
        if record is None:
            return cls.Config()
        try:
            return effective_config(record, cls)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
