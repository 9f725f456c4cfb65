"""Prompt templates see their variables and nothing else."""

from __future__ import annotations

import pytest

from aigc_saas.errors import InvalidInput
from scenarios.core.rendering import check_source, render

ESCAPES = [
    "{{ name.__class__.__mro__[1].__subclasses__() }}",
    "{{ name|attr('__class__') }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(name) }}",
    "{{ self._TemplateReference__context }}",
    "{{ 'x' * 10000000 }}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ name.upper.__globals__ }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_are_refused_by_the_sandbox(source: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        render(source, {"name": "Rosa"}, field="prompts.prompt")
    assert refused.value.code in ("template_unsafe", "template_render_failed")
    assert "prompts.prompt" in refused.value.message


@pytest.mark.parametrize(
    "source",
    ["{{ settings.SECRET_KEY }}", "{{ request }}", "{{ cycler.__init__.__globals__.os }}", "{{ lipsum.__globals__ }}"],
)
def test_names_other_than_the_declared_variables_are_refused_when_the_template_is_saved(source: str) -> None:
    with pytest.raises(InvalidInput, match="not declared variables"):
        check_source(source, {"name"}, field="prompts.prompt")


@pytest.mark.parametrize(
    "source", ["{% include '/etc/passwd' %}", "{% extends 'base.html' %}", "{% import 'x' as y %}"]
)
def test_the_filesystem_cannot_be_reached(source: str) -> None:
    with pytest.raises(InvalidInput):
        check_source(source, {"name"}, field="prompts.prompt")
    with pytest.raises(InvalidInput):
        render(source, {"name": "Rosa"}, field="prompts.prompt")


def test_ordinary_jinja_still_works() -> None:
    assert (
        render("{{ items | join(', ') | upper }}{% if n > 1 %}!{% endif %}", {"items": ["a", "b"], "n": 2}, field="p")
        == "A, B!"
    )
