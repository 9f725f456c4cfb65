"""The README's metrics table lists every metric the platform exports, with the name a scrape shows."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from aigc_saas.observability import metrics

ROOT = Path(__file__).resolve().parents[2]


def exported_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names.add(f"{value._name}_total" if isinstance(value, Counter) else value._name)
    names |= set(re.findall(r'GaugeMetricFamily\(\s*"(aigc_[a-z_]+)"', Path(metrics.__file__).read_text()))
    return names


def test_every_exported_metric_is_in_the_readme_table_and_prefixed() -> None:
    section = (ROOT / "README.md").read_text().split("## Health, metrics and logs", 1)[1].split("\n## ", 1)[0]
    listed = {
        name
        for row in section.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`(aigc_[a-z_]+)`", row.split("|")[1])
    }
    names = exported_names()

    assert len(names) >= 25
    assert all(name.startswith("aigc_") for name in names)
    assert names - listed == set()
    assert listed - names == set()
