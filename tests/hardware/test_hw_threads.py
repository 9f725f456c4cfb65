"""The CPU thread policy of a process that runs models: torch's threads, and no tokenizer thread pool."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import os, torch; from hardware.threads import configure_cpu_threads; n = configure_cpu_threads(); "
    "print(n, torch.get_num_threads(), os.environ.get('TOKENIZERS_PARALLELISM'))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AIGC_CPU_THREADS": "1"}, "1 1 false"),
        ({"AIGC_CPU_THREADS": "2", "TOKENIZERS_PARALLELISM": "true"}, "2 2 true"),
    ],
)
def test_a_model_process_sets_torchs_threads_and_keeps_the_tokenizer_pool_off_unless_told(env, expected) -> None:  # noqa: ANN001
    base = {k: v for k, v in os.environ.items() if k not in ("AIGC_CPU_THREADS", "TOKENIZERS_PARALLELISM")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == expected.split()
