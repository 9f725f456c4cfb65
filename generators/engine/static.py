"""Run a step runner over a fixed set of jobs to the end: the plugin's direct `generate`/`generate_batch` path."""

from __future__ import annotations

from collections.abc import Sequence as Seq

from generators.base import BatchItem, GenerationResult
from generators.engine.loop import StepRunner, stopped
from generators.engine.sequence import Sequence
from generators.errors import GeneratorError


def run_to_end(runner: StepRunner, items: Seq[BatchItem]) -> list[GenerationResult | GeneratorError]:
    """All items start together and each leaves when done; a cancelled item stops at the next step, alone."""
    outcomes: dict[int, GenerationResult | GeneratorError] = {}
    seqs: list[Sequence] = []
    for index, item in enumerate(items):
        seq = Sequence(id=str(index), params=item.params)
        try:
            runner.prepare(seq)
        except GeneratorError as exc:
            outcomes[index] = exc
            continue
        seqs.append(seq)
    index_of = {id(s): int(s.id) for s in seqs}
    running = list(seqs)
    joining, leaving = list(seqs), []
    while running:
        for seq in list(running):
            if items[index_of[id(seq)]].ctx.cancelled():
                seq.cancel()
                outcomes[index_of[id(seq)]] = stopped(seq)
                running.remove(seq)
                leaving.append(seq)
        if not running:
            break
        outputs = runner.step(joining, leaving)
        joining, leaving = [], []
        for out in outputs:
            ctx = items[index_of[id(out.seq)]].ctx
            if out.progress is not None:
                ctx.progress(*out.progress)
            if out.outcome is not None and out.seq in running:
                if isinstance(out.outcome, GenerationResult):
                    ctx.progress(1.0, "done")
                outcomes[index_of[id(out.seq)]] = out.outcome
                running.remove(out.seq)
                leaving.append(out.seq)
    if leaving:
        runner.step([], leaving)
    return [outcomes[i] for i in range(len(items))]
