"""Tenant templates render under a hard budget: every payload from issue 9 is a quick 4xx with a code."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from aigc_saas.errors import InvalidInput
from scenarios.core import rendering
from scenarios.core.rendering import render

TEXT = "x" * 8000
VARIABLES = {"name": "Rosa", "text": TEXT, "items": ["a", "b", "c"], "n": 3}

# (source, words the refusal must contain)
PAYLOADS = [
    ("{{ ((1,)*10**8)|length }}", "`**`"),
    ("{{ ((1,)*100000000)|length }}", "`*` would make"),
    ("{{ ([1]*100000000)|length }}", "`*` would make"),
    ("{{ [text] * 100000 }}", "`*` would make"),
    ("{{ 'x'|center(4e8) }}", "`center` width"),
    ("{{ 'x'|center(400000000) }}", "`center` width"),
    ("{{ text|replace('', text) }}", "`replace` would make"),
    ("{{ text.replace('x', text) }}", "`replace` would make"),
    ("{{ text|indent(100000000) }}", "`indent` width"),
    ("{{ ((text ~ '\n') * 12)|indent(text) }}", "`indent` would make"),
    ("{{ '{:>100000000}'.format(1) }}", "format widths"),
    ("{{ '{:.100000000f}'.format(1.5) }}", "format widths"),
    ("{{ '%100000000d'|format(1) }}", "`%` format widths"),
    ("{{ '%100000000d' % 1 }}", "`%` format widths"),
    ("{{ '%*d' % (100000000, 1) }}", "`%` format widths"),
    ("{{ text|join(text) }}", "`join` would make"),
    ("{{ text.join(text) }}", "`join` would make"),
    ("{{ text.ljust(1000000000) }}", "`ljust` width"),
    ("{{ text.expandtabs(100000000) }}", "`expandtabs`"),
    ("{{ range(1000000000)|list|length }}", "`range` would make"),
    ("{{ text|batch(1000000000, 1)|list|length }}", "`batch` size"),
    ("{{ text|slice(100000000)|list|length }}", "`slice` count"),
    (
        "{{ text ~ text ~ text ~ text ~ text ~ text ~ text ~ text ~ text ~ text ~ text ~ text ~ text }}",
        "`~` would make",
    ),
    ("{% set a = text + text %}{% set b = a + a %}{% set c = b + b %}{% set d = c + c %}{{ d }}", "`+` would make"),
    ("{% set x = 3 %}" + "{% set x = x * x %}" * 20 + "{{ x }}", "bits"),
    ("{% for a in text %}{% for b in text %}{% for c in text %}x{% endfor %}{% endfor %}{% endfor %}", "iterations"),
    ("{% for a in text %}{% for b in text %}{{ a }}{% endfor %}{% endfor %}", "iterations"),
    ("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "nest deeper"),
    (
        "{% macro g() %}{{ caller() }}{% endmacro %}{% macro f() %}{% call g() %}{{ f() }}{% endcall %}{% endmacro %}"
        "{{ f() }}",
        "nest deeper",
    ),
    ("{% for x in items recursive %}{{ loop(items) }}{% endfor %}", "nest deeper"),
    ("{% for c in text %}{{ text }}{% endfor %}", "renders to more than"),
    ("{% set s %}{% for c in text %}{{ text }}{% endfor %}{% endset %}{{ s|length }}", "writes more than"),
    ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "recursion too deep"),
    ("{{ text.translate({120: text}) }}", "translate"),
]


def _refusal(source: str) -> tuple[InvalidInput, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InvalidInput) as refused:
            render(source, VARIABLES, field="prompts.prompt")
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return refused.value, elapsed, peak


@pytest.mark.parametrize("source, words", PAYLOADS, ids=[p[0][:50] for p in PAYLOADS])
def test_payload_is_refused_quickly_and_cheaply(source: str, words: str) -> None:
    error, elapsed, peak = _refusal(source)

    assert error.code in ("template_unsafe", "template_render_failed")
    assert words in error.message, error.message
    assert error.fields[0]["field"] == "prompts.prompt"
    assert elapsed < 1.5, f"took {elapsed:.2f} s"
    assert peak < 48 * 2**20, f"allocated {peak / 2**20:.0f} MiB"


def test_the_wall_clock_limit_stops_a_slow_but_small_render(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(rendering, "RENDER_TIMEOUT_S", 0.05)
    source = "{% for i in range(9000) %}{% set y = text|replace('x', 'yz')|replace('y', 'x')|wordcount %}{% endfor %}."
    error, elapsed, _ = _refusal(source)

    assert "took longer than 0.05 s" in error.message
    assert elapsed < 0.5


def test_a_render_within_the_budget_is_unchanged() -> None:
    source = (
        "{% macro item(x) %}- {{ x|upper }}{% endmacro %}"
        "{% for x in items %}{{ item(x) }}\n{% endfor %}"
        "{{ '%5d|%s'|format(3, name) }} {{ '{:>6}'.format(name) }} {{ name|center(10) }}|{{ range(3)|join(',') }}"
        "{{ name * 2 }}{{ [1, 2] * 2 }}{{ text|length }} {{ 'ab'|replace('', '-') }} {{ name.ljust(6) }}|"
    )
    assert render(source, VARIABLES, field="p") == (
        "- A\n- B\n- C\n    3|Rosa   Rosa    Rosa   |0,1,2RosaRosa[1, 2, 1, 2]8000 -a-b- Rosa  |"
    )


def test_macro_recursion_within_the_depth_limit_works() -> None:
    source = "{% macro f(x) %}{% if x %}{{ x }}{{ f(x - 1) }}{% endif %}{% endmacro %}{{ f(10) }}"
    assert render(source, {}, field="p") == "10987654321"


def test_the_budget_is_per_render() -> None:
    source = "{% for a in text[:5000] %}{% endfor %}ok"
    for _ in range(5):  # 5 x 5,000 iterations: each render has its own 10,000
        assert render(source, VARIABLES, field="p") == "ok"
