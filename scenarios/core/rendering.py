"""Prompt rendering in Jinja2's immutable sandbox: templates see their variables and nothing else."""

from __future__ import annotations

import operator
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aigc_saas.errors import InvalidInput

MAX_RENDERED_CHARS = 20_000


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """No loader (no include/import/extends), no globals, no unsafe attributes, bounded `*` and `**`."""

    intercepted_binops = frozenset(["*", "**"])

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, loader=None)
        self.globals.clear()  # range, lipsum, cycler, joiner, namespace, dict: nothing a prompt needs

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            raise SecurityError("`**` is not allowed in prompt templates")
        size = max(len(left) if isinstance(left, str | list) else 0, len(right) if isinstance(right, str | list) else 0)
        count = right if isinstance(right, int) else left if isinstance(left, int) else 1
        if size and count * size > MAX_RENDERED_CHARS:
            raise SecurityError(f"repetition would make more than {MAX_RENDERED_CHARS} characters")
        return operator.mul(left, right)


ENV = PromptEnvironment()


def template_error(field: str, message: str, code: str = "invalid_template") -> InvalidInput:
    return InvalidInput(
        f"`{field}`: {message}", code=code, fields=[{"field": field, "code": code, "message": f"`{field}`: {message}"}]
    )


def check_source(source: str, allowed: set[str], *, field: str) -> set[str]:
    """Parse a prompt template; refuse syntax errors and names that are not declared variables."""
    try:
        names = meta.find_undeclared_variables(ENV.parse(source))
    except TemplateSyntaxError as exc:
        raise template_error(field, f"template syntax error on line {exc.lineno}: {exc.message}") from None
    unknown = sorted(names - allowed)
    if unknown:
        raise template_error(field, f"uses {unknown}, which are not declared variables; declared: {sorted(allowed)}")
    refused = meta.find_referenced_templates(ENV.parse(source))
    if any(True for _ in refused):
        raise template_error(field, "include, import and extends are not allowed in prompt templates")
    return names


def render(source: str, variables: dict[str, Any], *, field: str) -> str:
    """The rendered text, or a 400 naming the field: sandbox violations are `template_unsafe`."""
    try:
        text = ENV.from_string(source).render(**variables)
    except SecurityError as exc:
        raise template_error(field, f"refused by the sandbox: {exc}", code="template_unsafe") from None
    except TemplateError as exc:
        raise template_error(field, f"could not render: {exc}", code="template_render_failed") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise template_error(field, f"could not render: {exc}", code="template_render_failed") from None
    if len(text) > MAX_RENDERED_CHARS:
        raise template_error(field, f"renders to {len(text)} characters, over {MAX_RENDERED_CHARS}", "template_unsafe")
    return text.strip()
