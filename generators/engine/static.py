"""Run a step runner over a fixed set of jobs to the end: the plugin's direct `generate`/`generate_batch` path."""

from __future__ import annotations

from collections.abc import Sequence as Seq

from generators.base import BatchItem, GenerationResult
from generators.engine.loop import StepRunner, stopped
from generators.engine.sequence import Sequence
from generators.errors import GeneratorError


def run_to_end(runner: StepRunner, items: Seq[BatchItem]) -> list[GenerationResult | GeneratorError]:
    """Items start together (as many as the runner has room for; the rest join as rows leave), each leaves when
    done, and a cancelled item stops at the next step, alone."""
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
    running: list[Sequence] = []
    waiting, leaving = list(seqs), []
    free_rows = getattr(runner, "free_rows", None)  # a runner with fixed slots takes what fits, the rest follow
    while running or waiting:
        room = len(waiting) if free_rows is None else max(0, free_rows() + len(leaving))
        if not running and not room:
            for seq in waiting:  # nothing runs and nothing fits: no slot will free up for them
                outcomes[index_of[id(seq)]] = GeneratorError(
                    "no KV-cache slot is free", code="context_exceeds_kv_budget"
                )
            break
        joining, waiting = waiting[:room], waiting[room:]
        running.extend(joining)
        for seq in list(running):
            if items[index_of[id(seq)]].ctx.cancelled():
                seq.cancel()
                outcomes[index_of[id(seq)]] = stopped(seq)
                running.remove(seq)
                if seq in joining:
                    joining.remove(seq)  # it never reached the runner: nothing to release
                else:
                    leaving.append(seq)
        if not running:
            continue
        outputs = runner.step(joining, leaving)
        leaving = []
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
