"""Prompt rendering in Jinja2's immutable sandbox, under a hard budget.

Templates are tenant input rendered in the web process, so a render must stay cheap whatever the source says:

- the sandbox: no loader (no include/import/extends), no globals but a bounded `range`, no unsafe attributes;
- every operation that can allocate in proportion to an argument is bounded *before* it runs: `*` on any
  sequence and on ints, `+`, `%`/`format`, `center`, `indent`, `replace`, `join`, `batch`, `slice`, the
  `str` methods that pad or join, `range`;
- one budget per render (a ContextVar): loop iterations over all loops, nested macro/`caller`/recursive-loop
  calls, characters written anywhere (including macro bodies and `{% set %}` blocks), and a wall-clock
  deadline checked at every loop step, call, filter, attribute, item and operator;
- the root output is streamed and cut off as soon as it passes `MAX_RENDERED_CHARS`.

With every value bounded in size (`MAX_VALUE_CHARS`) and every step checking the deadline, a render costs at
most `RENDER_TIMEOUT_S` plus one bounded step of CPU, and memory proportional to `MAX_WORK_CHARS`.
"""

from __future__ import annotations

import functools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from aigc_saas.errors import InvalidInput

MAX_RENDERED_CHARS = 20_000
MAX_SOURCE_CHARS = 20_000
MAX_VALUE_CHARS = 100_000  # any intermediate string, list, tuple, ... (items or characters)
MAX_WORK_CHARS = 400_000  # characters written anywhere in one render (root output, macros, set/filter blocks)
MAX_ITERATIONS = 10_000  # loop iterations in one render, all loops together
MAX_CALL_DEPTH = 20  # nested macro, caller and recursive-loop calls
MAX_INT_BITS = 4096
MAX_FORMAT_WIDTH = 1000  # widths and precisions in `%` and `str.format` specs
RENDER_TIMEOUT_S = 1.0


class RenderLimitExceeded(SecurityError):
    """A render would go over one of the budget's limits; the message names which."""


@dataclass
class Budget:
    deadline: float
    iterations: int = 0
    depth: int = 0
    chars: int = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(f"rendering took longer than {RENDER_TIMEOUT_S} s")


_BUDGET: ContextVar[Budget | None] = ContextVar("render_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _sized(value: Any) -> int | None:
    """How much `value` weighs: characters of its strings plus its items, counted through nested containers
    (so `[text] * n` is priced by the text, not by one reference); None for numbers and other scalars.
    Stops counting once past the limit, so pricing a value is never the expensive part."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, (list, tuple, set, frozenset, dict, range)):
        return None
    total, stack = 0, [value]
    while stack and total <= MAX_VALUE_CHARS:
        item = stack.pop()
        if isinstance(item, (str, range)):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            total += 1
    return total


def _refuse_over(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise RenderLimitExceeded(f"{what} would make {size} characters or items, over {MAX_VALUE_CHARS}")


def _check_result(value: Any, what: str) -> Any:
    size = _sized(value)
    if size is not None:
        _refuse_over(size, what)
    return value


def _as_count(value: Any, what: str) -> int:
    """A width/count argument as an int, refused when it is too large to be a sane width."""
    if isinstance(value, float):
        value = int(value) if value < 2**63 else MAX_VALUE_CHARS + 1
    if not isinstance(value, int):
        raise RenderLimitExceeded(f"{what} must be a number")
    _refuse_over(value, what)
    return value


PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_percent(fmt: str) -> None:
    for width, precision in PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_FORMAT_WIDTH):
                raise RenderLimitExceeded(f"`%` format widths above {MAX_FORMAT_WIDTH} (or `*`) are not allowed")


def _check_format(fmt: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise RenderLimitExceeded(f"bad format string: {exc}") from None
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise RenderLimitExceeded("nested fields in format specs are not allowed")
        if any(int(number) > MAX_FORMAT_WIDTH for number in re.findall(r"\d+", spec)):
            raise RenderLimitExceeded(f"format widths above {MAX_FORMAT_WIDTH} are not allowed")


def _replaced_size(text: str, old: str, new: str, count: Any = -1) -> int:
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _joined(items: Iterable[Any], sep: str) -> int:
    total, first = 0, True
    for item in items:
        _tick()
        total += len(item if isinstance(item, str) else str(item)) + (0 if first else len(sep))
        first = False
        _refuse_over(total, "`join`")
    return total


# ---- bounded filters -------------------------------------------------------------------------------------


def _center(value: Any, width: Any = 80) -> str:
    return str(value).center(max(_as_count(width, "`center` width"), 0))


def _indent(value: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    pad = len(width) if isinstance(width, str) else _as_count(width, "`indent` width")
    text = str(value)
    _refuse_over(len(text) + (text.count("\n") + 1) * max(pad, 0), "`indent`")
    return FILTERS["indent"](text, width, first, blank)


@pass_eval_context
def _replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> Any:
    _refuse_over(_replaced_size(str(value), str(old), str(new), count if count is not None else -1), "`replace`")
    return FILTERS["replace"](eval_ctx, value, old, new, count)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_percent(str(value))
    return _check_result(FILTERS["format"](value, *args, **kwargs), "`format`")


@pass_eval_context
def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value)
    _refuse_over(len(items), "`join`")
    if attribute is None:
        _joined(items, str(d))
    return _check_result(FILTERS["join"](eval_ctx, items, d, attribute), "`join`")


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> Any:
    return FILTERS["batch"](value, _as_count(linecount, "`batch` size"), fill_with)


def _slice(value: Any, slices: Any, fill_with: Any = None) -> Any:
    return FILTERS["slice"](value, min(_as_count(slices, "`slice` count"), MAX_ITERATIONS), fill_with)


BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "replace": _replace,
    "format": _format,
    "join": _join,
    "batch": _batch,
    "slice": _slice,
}


def _metered(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Every filter and test checks the deadline and the size of what it returns."""

    @functools.wraps(func)  # keeps `jinja_pass_arg`, so Jinja still passes the eval context where needed
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return _check_result(func(*args, **kwargs), f"`{name}`")

    return wrapper


def _bounded_range(*args: Any) -> range:
    _tick()
    numbers = range(*args)
    _refuse_over(len(numbers), "`range`")
    return numbers


# str methods a template may call that allocate in proportion to an argument: refuse first, then run.
def _check_str_method(text: str, name: str, args: tuple, kwargs: dict) -> None:
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _as_count(args[0], f"`{name}` width")
    elif name == "expandtabs":
        tab = _as_count(args[0] if args else kwargs.get("tabsize", 8), "`expandtabs` size")
        _refuse_over(len(text) + text.count("\t") * tab, "`expandtabs`")
    elif name == "replace" and len(args) >= 2:
        _refuse_over(_replaced_size(text, str(args[0]), str(args[1]), args[2] if len(args) > 2 else -1), "`replace`")
    elif name == "join" and args:
        items = list(args[0])
        _refuse_over(len(items), "`join`")
        _joined(items, text)
    elif name == "translate":
        raise RenderLimitExceeded("`str.translate` is not allowed in prompt templates")


# ---- the environment ---------------------------------------------------------------------------------------


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus the budget: bounded operators, filters, calls, loops and output."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self) -> None:
        # optimized=False: no constant folding at compile time, so `'x'|center(10**9)` is checked at render too
        super().__init__(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, loader=None, optimized=False
        )
        self.globals.clear()  # lipsum, cycler, joiner, namespace, dict: nothing a prompt needs
        self.globals["range"] = _bounded_range
        self.filters = {name: _metered(BOUNDED_FILTERS.get(name, func), name) for name, func in self.filters.items()}
        self.tests = {name: _metered(func, name) for name, func in self.tests.items()}

    # -- the AST: loops, `~` and every output go through the budget
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        if len(source) > MAX_SOURCE_CHARS:
            raise TemplateSyntaxError(f"the template is longer than {MAX_SOURCE_CHARS} characters", 1)
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = _env_call("bounded_iter", loop.iter)
        for concat in list(tree.find_all(nodes.Concat)):
            concat.nodes = [_env_call("bounded_concat", nodes.List(concat.nodes))]
        for output in tree.find_all(nodes.Output):
            output.nodes = [_env_call("count_output", child) for child in output.nodes]
        return tree

    def bounded_iter(self, iterable: Any) -> Iterator[Any]:
        budget = _BUDGET.get()
        for item in iterable:
            if budget is not None:
                budget.tick()
                budget.iterations += 1
                if budget.iterations > MAX_ITERATIONS:
                    raise RenderLimitExceeded(f"loops ran more than {MAX_ITERATIONS} iterations")
            yield item

    def bounded_concat(self, parts: list[Any]) -> str:
        texts = [str(part) for part in parts]
        _refuse_over(sum(len(text) for text in texts), "`~`")
        return "".join(texts)

    def count_output(self, value: Any) -> str:
        text = str(value)
        budget = _BUDGET.get()
        if budget is not None:
            budget.chars += len(text)
            if budget.chars > MAX_WORK_CHARS:
                raise RenderLimitExceeded(f"the template writes more than {MAX_WORK_CHARS} characters")
        return text

    # -- operators, attributes, items, calls
    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        _tick()
        if operator_name == "**":
            raise SecurityError("`**` is not allowed in prompt templates")
        left_size, right_size = _sized(left), _sized(right)
        if operator_name == "*":
            if left_size is not None and isinstance(right, int):
                _refuse_over(left_size * max(right, 0), "`*`")
            elif right_size is not None and isinstance(left, int):
                _refuse_over(right_size * max(left, 0), "`*`")
            elif (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise RenderLimitExceeded(f"`*` would make a number over {MAX_INT_BITS} bits")
            return left * right
        if operator_name == "+":
            if left_size is not None and right_size is not None:
                _refuse_over(left_size + right_size, "`+`")
            return left + right
        if isinstance(left, str):  # `%`
            _check_percent(left)
            return _check_result(left % right, "`%`")
        return left % right

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)  # Jinja's sandboxed str.format / format_map, or None
        if wrapped is not None:
            _check_format(str(value.__self__))  # widths are refused before anything is formatted
        return wrapped

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        nested = isinstance(__obj, (Macro, LoopContext))
        if nested and budget is not None:
            budget.depth += 1
            if budget.depth > MAX_CALL_DEPTH:
                raise RenderLimitExceeded(f"macros or recursive loops nest deeper than {MAX_CALL_DEPTH} calls")
        if isinstance(__obj, LoopContext) and args:
            args = (__self.bounded_iter(args[0]), *args[1:])
        try:
            return _check_result(super().call(__context, __obj, *args, **kwargs), "a call")
        finally:
            if nested and budget is not None:
                budget.depth -= 1


def _env_call(method: str, arg: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(method), [arg], [], None, None)


ENV = PromptEnvironment()


def template_error(field: str, message: str, code: str = "invalid_template") -> InvalidInput:
    return InvalidInput(
        f"`{field}`: {message}", code=code, fields=[{"field": field, "code": code, "message": f"`{field}`: {message}"}]
    )


def check_source(source: str, allowed: set[str], *, field: str) -> set[str]:
    """Parse a prompt template; refuse syntax errors and names that are not declared variables."""
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise template_error(field, f"template syntax error on line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise template_error(field, "the template nests too deeply", code="template_unsafe") from None
    names = meta.find_undeclared_variables(tree)
    unknown = sorted(names - allowed - set(ENV.globals))
    if unknown:
        raise template_error(field, f"uses {unknown}, which are not declared variables; declared: {sorted(allowed)}")
    if any(True for _ in meta.find_referenced_templates(tree)):
        raise template_error(field, "include, import and extends are not allowed in prompt templates")
    return names


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> Any:
    return ENV.from_string(source)


def _render(source: str, variables: dict[str, Any]) -> str:
    out: list[str] = []
    length = 0
    for chunk in _compiled(source).generate(**variables):
        length += len(chunk)
        if length > MAX_RENDERED_CHARS:  # stop while rendering, not after
            raise RenderLimitExceeded(f"the template renders to more than {MAX_RENDERED_CHARS} characters")
        out.append(chunk)
    return "".join(out)


def render(source: str, variables: dict[str, Any], *, field: str) -> str:
    """The rendered text, or a 400 naming the field: sandbox and budget violations are `template_unsafe`."""
    token = _BUDGET.set(Budget(deadline=time.monotonic() + RENDER_TIMEOUT_S))
    try:
        text = _render(source, variables)
    except SecurityError as exc:
        raise template_error(field, f"refused by the sandbox: {exc}", code="template_unsafe") from None
    except RecursionError:
        raise template_error(field, "refused by the sandbox: recursion too deep", code="template_unsafe") from None
    except MemoryError:
        raise template_error(field, "refused by the sandbox: out of memory", code="template_unsafe") from None
    except TemplateError as exc:
        raise template_error(field, f"could not render: {exc}", code="template_render_failed") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise template_error(field, f"could not render: {str(exc)[:300]}", code="template_render_failed") from None
    finally:
        _BUDGET.reset(token)
    return text.strip()
