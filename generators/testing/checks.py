"""The contract kit's checks: each returns the problems it finds, as sentences that say what to fix."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from generators.base import BatchItem, GenerationResult, Generator, LocalContext, Modality
from generators.errors import GeneratorError, JobCancelled, ParamsInvalid
from generators.registry import contract_problems, secret_config_fields
from hardware import DeviceChoice

HEAVY_MODULES = ("torch", "transformers", "diffusers")
CPU = DeviceChoice(device="cpu", dtype="float32")
# Strings in these JSON Schema formats have a bounded length by construction.
BOUNDED_STRING_FORMATS = {"date", "date-time", "time", "uuid", "uuid1", "uuid3", "uuid4", "uuid5", "ipv4", "ipv6"}
RECORDED_METADATA = ("model_id", "device", "dtype")


class ContractViolation(AssertionError):
    """A plugin breaks the contract; the message lists each problem with its fix."""


def fail_on(problems: list[str], what: str) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ContractViolation(f"{what}:\n{lines}")


# --- declaration -----------------------------------------------------------------------------------------------


def declaration_problems(cls: object) -> list[str]:
    """What the registry itself would reject (name, modality, Params, Config, needs, abstract methods)."""
    return [f"{p} (the registry skips the plugin with `invalid_contract`)" for p in contract_problems(cls)]


# --- params ----------------------------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _bound_problems(path: str, schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """Unbounded inputs under `schema`: strings without maxLength, numbers without both bounds, lists without maxItems."""
    schema = _resolve(schema, root)
    if "enum" in schema or "const" in schema:
        return []
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return [p for branch in schema[key] for p in _bound_problems(path, branch, root)]
    kind = schema.get("type")
    if isinstance(kind, list):
        return [p for k in kind if k != "null" for p in _bound_problems(path, {**schema, "type": k}, root)]
    if kind == "string":
        if "maxLength" in schema or schema.get("format") in BOUNDED_STRING_FORMATS:
            return []
        return [
            f"`{path}` is a string with no max_length: add Field(max_length=...) (or use a Literal of choices) "
            "so a request cannot be unbounded"
        ]
    if kind in ("integer", "number"):
        missing = []
        if "minimum" not in schema and "exclusiveMinimum" not in schema:
            missing.append("a lower bound (ge= or gt=)")
        if "maximum" not in schema and "exclusiveMaximum" not in schema:
            missing.append("an upper bound (le= or lt=)")
        if missing:
            return [f"`{path}` is a number with no {' and no '.join(missing)}: add it to its Field(...)"]
        return []
    if kind == "array":
        problems = []
        if "maxItems" not in schema and "maxItems" not in schema.get("items", {}):
            problems.append(f"`{path}` is a list with no max_length: add Field(max_length=...) to bound its items")
        items = schema.get("items") or schema.get("prefixItems")
        for i, item in enumerate(items if isinstance(items, list) else [items] if items else []):
            problems += _bound_problems(f"{path}[{i if isinstance(items, list) else ''}]", item, root)
        return problems
    if kind == "object" or "properties" in schema:
        problems = []
        for name, sub in schema.get("properties", {}).items():
            problems += _bound_problems(f"{path}.{name}", sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            if "maxProperties" not in schema:
                problems.append(f"`{path}` is a mapping with no max_length: add Field(max_length=...)")
            problems += _bound_problems(f"{path}[*]", extra, root)
        return problems
    return []


def params_problems(cls: type[Generator], sample_params: dict[str, Any] | None = None) -> list[str]:
    """Params: a valid JSON Schema, every input bounded and documented, the sample accepted by model and schema."""
    params = cls.Params
    name = params.__name__
    try:
        schema = params.model_json_schema()
        json.dumps(schema)
    except Exception as exc:  # noqa: BLE001 - report whatever the plugin's model raises
        return [f"`{name}.model_json_schema()` fails ({type(exc).__name__}: {exc}): use JSON-compatible field types"]
    problems = []
    try:
        import jsonschema
    except ImportError:  # the kit still runs without the dev dependency; the schema checks below need it
        jsonschema = None
    if jsonschema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            problems.append(f"`{name}` JSON Schema is invalid at {list(exc.path)}: {exc.message}")
    if params.model_config.get("extra") != "forbid":
        problems.append(
            f'`{name}` accepts unknown params: set model_config = ConfigDict(extra="forbid") so a misspelt '
            "param is refused instead of silently ignored"
        )
    for field_name, info in params.model_fields.items():
        if not (info.description or "").strip():
            problems.append(
                f"`{name}.{field_name}` has no description: add Field(description=...); the API schema and "
                "the admin show it to users"
            )
    for prop, sub in schema.get("properties", {}).items():
        problems += _bound_problems(f"{name}.{prop}", sub, schema)
    if sample_params is not None:
        try:
            validated = cls.validate_params(copy.deepcopy(sample_params))
        except ParamsInvalid as exc:
            problems.append(f"`sample_params` are rejected by `{name}`: {exc.message}; give params a job would send")
        else:
            problems += _expected_steps_problems(cls, validated)
            if jsonschema is not None:
                errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(sample_params), key=str)
                problems += [
                    f"`sample_params` pass `{name}` but its published JSON Schema rejects them at "
                    f"{list(e.path)}: {e.message}; the schema clients see must match what the model accepts"
                    for e in errors
                ]
    return problems


def _expected_steps_problems(cls: type[Generator], params: Any) -> list[str]:
    """`expected_steps` orders a full worker's queue: a whole number of steps, at least 1, for any valid params."""
    try:
        steps = cls.expected_steps(params)
    except Exception as exc:  # noqa: BLE001 - report whatever the plugin raises
        return [f"`{cls.__name__}.expected_steps(sample_params)` fails ({type(exc).__name__}: {exc})"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return [f"`{cls.__name__}.expected_steps(sample_params)` returned {steps!r}: return an int of at least 1"]
    return []


def _invalid_variants(cls: type[Generator], sample: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(description, field expected in the error, raw params) for params a client might wrongly send."""
    schema = cls.Params.model_json_schema()
    yield "a list instead of an object", "params", [sample]
    yield "an unknown param `no_such_param`", "no_such_param", {**sample, "no_such_param": 1}
    for name in schema.get("required", []):
        yield f"required `{name}` left out", name, {k: v for k, v in sample.items() if k != name}
    for name, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, schema)
        branches = [b for b in sub.get("anyOf", [sub]) if _resolve(b, schema).get("type") != "null"]
        if len(branches) != 1:
            continue
        sub = _resolve(branches[0], schema)
        if "maxLength" in sub:
            yield f"`{name}` over its max_length", name, {**sample, name: "x" * (sub["maxLength"] + 1)}
        if sub.get("type") in ("integer", "number"):
            if "maximum" in sub or "exclusiveMaximum" in sub:
                top = sub.get("maximum", sub.get("exclusiveMaximum"))
                yield f"`{name}` above its upper bound", name, {**sample, name: math.floor(top) + 1}
            if "minimum" in sub or "exclusiveMinimum" in sub:
                low = sub.get("minimum", sub.get("exclusiveMinimum"))
                yield f"`{name}` below its lower bound", name, {**sample, name: math.ceil(low) - 1}
            yield f"`{name}` given as a word", name, {**sample, name: "many"}
        if "maxItems" in sub:
            yield f"`{name}` with too many items", name, {**sample, name: [None] * (sub["maxItems"] + 1)}
        if "enum" in sub:
            yield f"`{name}` not one of its choices", name, {**sample, name: "not-a-choice-\u2603"}


def invalid_params_problems(
    cls: type[Generator], sample_params: dict[str, Any], extra_cases: list[tuple[dict[str, Any], str]] = ()
) -> list[str]:
    """Bad params must raise `ParamsInvalid` naming the field, never another exception."""
    cases = list(_invalid_variants(cls, sample_params))
    cases += [(f"your case {raw!r}", field_name, raw) for raw, field_name in extra_cases]
    problems = []
    for what, field_name, raw in cases:
        try:
            cls.validate_params(raw)
        except ParamsInvalid as exc:
            fields = [e.get("field", "") for e in exc.errors]
            if not all({"field", "code", "message"} <= set(e) for e in exc.errors) or not exc.errors:
                problems.append(f"{what}: `ParamsInvalid.errors` must list {{field, code, message}} per bad field")
            elif not any(f == field_name or f.startswith(f"{field_name}.") for f in fields):
                problems.append(f"{what}: the error names {fields}, not `{field_name}`; clients fix what is named")
        except Exception as exc:  # noqa: BLE001 - this is exactly what the check is looking for
            problems.append(
                f"{what}: `validate_params` raised {type(exc).__name__}: {exc} instead of ParamsInvalid; in pydantic "
                "validators raise ValueError (the platform turns it into a field error), never other exceptions"
            )
        else:
            problems.append(f"{what}: accepted; bound the field so the platform refuses it before it reaches a worker")
    return problems


# --- import weight ---------------------------------------------------------------------------------------------

_IMPORT_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def import_problems(cls: type[Generator], heavy: tuple[str, ...] = HEAVY_MODULES) -> list[str]:
    """Importing the plugin's module in a fresh interpreter must not import heavy libraries."""
    module = cls.__module__
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    probe = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, module, json.dumps(list(heavy))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if probe.returncode != 0:
        return [f"`import {module}` fails in a fresh interpreter:\n{probe.stderr.strip()[-2000:]}"]
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    if loaded:
        return [
            f"`import {module}` imports {loaded}: move those imports inside `setup` (and `generate`), so the web "
            "process can list plugins and validate params without them"
        ]
    return []


# --- outputs ---------------------------------------------------------------------------------------------------


def _decode_image(data: bytes) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return "it has no pixels"
    except Exception as exc:  # noqa: BLE001
        return f"Pillow cannot decode it ({type(exc).__name__}: {exc})"
    return None


def _decode_audio(data: bytes) -> str | None:
    import soundfile

    try:
        frames, _rate = soundfile.read(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        return f"soundfile cannot decode it ({type(exc).__name__}: {exc})"
    return None if len(frames) else "it has no audio frames"


def output_problems(cls: type[Generator], result: object) -> list[str]:
    """The result is a GenerationResult carrying outputs of the declared modality that real decoders accept."""
    if not isinstance(result, GenerationResult):
        return [f"`generate` returned {type(result).__name__}; return a generators.base.GenerationResult"]
    problems = []
    for i, out in enumerate(result.files):
        if not (isinstance(out.data, bytes) and out.data):
            problems.append(f"`files[{i}].data` must be non-empty bytes")
        if not out.filename or "/" in out.filename:
            problems.append(f"`files[{i}].filename` must be a plain file name, got {out.filename!r}")
    if cls.modality == Modality.TEXT:
        if not (isinstance(result.text, str) and result.text.strip()):
            problems.append(f"a text plugin must return non-empty `GenerationResult.text`, got {result.text!r}")
        return problems
    kind, decode = {Modality.IMAGE: ("image", _decode_image), Modality.AUDIO: ("audio", _decode_audio)}[cls.modality]
    if not result.files:
        return [*problems, f"an {kind} plugin must return at least one OutputFile in `GenerationResult.files`"]
    for i, out in enumerate(result.files):
        if not out.content_type.startswith(f"{kind}/"):
            problems.append(f"`files[{i}].content_type` is {out.content_type!r}; an {kind} plugin returns {kind}/*")
        elif isinstance(out.data, bytes) and out.data and (why := decode(out.data)):
            problems.append(f"`files[{i}]` ({out.content_type}) is not a valid {kind}: {why}")
    return problems


def _secret_values(config: BaseModel) -> list[str]:
    values = []
    for name in secret_config_fields(type(config)):
        value = getattr(config, name, None)
        if isinstance(value, SecretStr | SecretBytes):
            raw = value.get_secret_value()
            values.append(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
    return [v for v in values if len(v) >= 4]


def metadata_problems(
    cls: type[Generator], result: GenerationResult, params: BaseModel, ctx: LocalContext, config: BaseModel
) -> list[str]:
    """Metadata the platform records: model, device, dtype (and seed); JSON-storable; no secret echoed back."""
    problems = []
    meta = result.metadata
    for key in RECORDED_METADATA:
        if key not in meta:
            problems.append(f"`GenerationResult.metadata` has no {key!r}: jobs record which {key} produced them")
    if meta.get("device") not in (None, ctx.device.device):
        problems.append(f"`metadata['device']` is {meta['device']!r}; report the device you ran on (ctx.device.device)")
    if meta.get("dtype") not in (None, ctx.device.dtype):
        problems.append(f"`metadata['dtype']` is {meta['dtype']!r}; report ctx.device.dtype, never change it quietly")
    if "seed" in type(params).model_fields and "seed" not in meta:
        problems.append("`Params` has a `seed` but `metadata` has no 'seed': record the seed used so a job can repeat")
    for where, value in [("metadata", meta), ("data", result.data)] + [
        (f"files[{i}].metadata", f.metadata) for i, f in enumerate(result.files)
    ]:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            problems.append(f"`{where}` is not JSON-serialisable ({exc}): the platform stores it as JSON")
    shown = json.dumps([meta, result.data, [f.metadata for f in result.files], result.text], default=str)
    if any(secret in shown for secret in _secret_values(config)):
        problems.append("a secret config value appears in the job's result: secrets are passed only to the plugin")
    return problems


def progress_problems(reports: list[tuple[float, str]]) -> list[str]:
    """Progress is reported at least once, as fractions in [0, 1] that never go back."""
    if not reports:
        return ["`generate` never called ctx.progress(fraction, message): report progress as work advances"]
    problems = []
    for i, (fraction, message) in enumerate(reports):
        if not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            problems.append(f"progress report {i} is {fraction!r}; fractions lie between 0.0 and 1.0")
        if not isinstance(message, str):
            problems.append(f"progress report {i} has message {message!r}; give a short str")
    fractions = [f for f, _ in reports if isinstance(f, int | float)]
    for i in range(1, len(fractions)):
        if fractions[i] < fractions[i - 1]:
            problems.append(
                f"progress went back from {fractions[i - 1]} to {fractions[i]} (report {i}); report monotonic progress"
            )
            break
    return problems


def cancellation_problems(plugin: Generator, params: BaseModel, device: DeviceChoice = CPU) -> list[str]:
    """A cancel request that arrives after the first progress report makes `generate` raise JobCancelled."""
    ctx = LocalContext(device, cancel_after=1)
    try:
        plugin.generate(params, ctx)
    except JobCancelled:
        return []
    except Exception as exc:  # noqa: BLE001
        return [f"after a cancel request `generate` raised {type(exc).__name__}: {exc}; raise JobCancelled instead"]
    if not ctx.reports:
        return ["`generate` reported no progress, so it never looked for a cancel request"]
    return [
        "`generate` finished although the job was cancelled after its first progress report: check "
        "ctx.cancelled() (or call ctx.raise_if_cancelled()) after each step and raise JobCancelled"
    ]


def batch_problems(plugin: Generator, params: BaseModel, device: DeviceChoice = CPU) -> list[str]:
    """`generate_batch` returns one result (or GeneratorError) per item, in order, each a valid output."""
    cls = type(plugin)
    problems = []
    if cls.max_batch_size < 1:
        problems.append(f"`max_batch_size` is {cls.max_batch_size}; it must be at least 1")
    try:
        hash(plugin.batch_key(params))
    except TypeError:
        problems.append("`batch_key(params)` must return a hashable value (or None to never batch)")
    size = max(2, min(cls.max_batch_size, 3))
    items = [BatchItem(params=params, ctx=LocalContext(device)) for _ in range(size)]
    results = plugin.generate_batch(items)
    if not isinstance(results, list) or len(results) != size:
        return [*problems, f"`generate_batch` of {size} items must return a list of {size} results, got {results!r}"]
    for i, result in enumerate(results):
        if isinstance(result, GeneratorError):
            problems.append(f"batch item {i} failed on sample params: {result.code}: {result.message}")
        else:
            problems += [f"batch item {i}: {p}" for p in output_problems(cls, result)]
    return problems


# --- asset inputs ----------------------------------------------------------------------------------------------


def params_with_inputs(
    cls: type[Generator], sample_params: dict[str, Any], sample_inputs: dict[str, bytes] | None = None
) -> BaseModel:
    """The sample params as the worker hands them over: each asset id replaced by its decoded sample file."""
    from generators.assets import asset_fields, decode, with_inputs

    params = cls.validate_params(copy.deepcopy(sample_params))
    specs = asset_fields(cls.Params)
    decoded = {
        name: decode(specs[name], data, asset_id=str(sample_params.get(name, "")))
        for name, data in (sample_inputs or {}).items()
        if name in specs and sample_params.get(name) is not None
    }
    return with_inputs(params, decoded) if decoded else params


def asset_problems(
    cls: type[Generator], sample_params: dict[str, Any], sample_inputs: dict[str, bytes] | None = None
) -> list[str]:
    """Asset params: typed with generators.assets helpers, top-level, published with their kind and types, and
    every asset id in the sample has a sample file that decodes to what `generate` will receive."""
    from generators.assets import ASSET_ID_FORMAT, AssetRejected, AudioData, asset_fields, decode, is_image

    name = cls.Params.__name__
    specs = asset_fields(cls.Params)
    problems = [
        f"`{name}.{field}` hides an asset input inside a list or model: declare each asset as its own top-level "
        "field (`ImageInput`, `ImageInput | None`…) so the platform can check and decode it"
        for field in nested_asset_fields(cls.Params)
    ]
    schema = cls.Params.model_json_schema()
    for field, spec in specs.items():
        prop = _resolve(schema.get("properties", {}).get(field, {}), schema)
        branches = [_resolve(b, schema) for b in prop.get("anyOf", [prop])]
        published = [b for b in branches if b.get("format") == ASSET_ID_FORMAT]
        if not published or published[0].get("x-aigc-asset", {}).get("kind") != spec.kind:
            problems.append(
                f"`{name}.{field}` is an asset input but its JSON Schema does not say so (format "
                f"{ASSET_ID_FORMAT!r} with `x-aigc-asset`); do not override the schema of generators.assets types"
            )
    inputs = sample_inputs or {}
    for field in sorted(set(inputs) - set(specs)):
        problems.append(f"`sample_inputs[{field!r}]` is given but `{name}.{field}` is not an asset input")
    for field, spec in specs.items():
        if sample_params.get(field) is None:
            continue
        if field not in inputs:
            problems.append(
                f"`sample_params[{field!r}]` names an asset: give its file in `sample_inputs[{field!r}]` "
                "(bytes), so the kit can hand `generate` the decoded input as the worker does"
            )
            continue
        try:
            value = decode(spec, inputs[field], asset_id=str(sample_params[field]))
        except AssetRejected as exc:
            problems.append(f"`sample_inputs[{field!r}]` is refused for this input: {exc.message} ({exc.code})")
            continue
        if spec.kind == "image" and not (is_image(value) and value.mode == spec.mode):
            problems.append(f"`{field}` decoded to {value!r}, not a PIL image in mode {spec.mode!r}")
        if spec.kind == "audio" and not (
            isinstance(value, AudioData) and value.sample_rate == (spec.sample_rate or value.sample_rate)
        ):
            problems.append(f"`{field}` decoded to {value!r}, not AudioData at {spec.sample_rate} Hz")
    return problems


def nested_asset_fields(params_cls: type[BaseModel]) -> list[str]:
    from generators.assets import nested_asset_fields as nested

    return nested(params_cls)
