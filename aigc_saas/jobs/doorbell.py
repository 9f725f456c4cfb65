"""One doorbell per queue on its way: a broker message stands for every job committed before a worker answers it.

A broker message only tells a worker to claim from its queue (the rows are the truth, and one claim takes as many
jobs as the worker's engines have room for), so a burst of submissions needs one message, not one each. A ring
first sets its queue's key (`SET NX`): the ring that set it sends the message; a ring that finds it set sends
nothing, since its job was committed before the worker answers the message on its way. The worker clears the key
(`answered`) before it reads the queue, so a job committed after that rings anew; a claim that took all it could
rings again for whatever may be left (`aigc_saas.jobs.runtime`).

The key expires after `HOLD_MS`, so that one left behind by a lost message holds rings back only that long; jobs a
lost message stood for are re-rung by the sweep (`AIGC_QUEUED_REDISPATCH_SECONDS` after their ring), as lost
messages always were. When Redis cannot be asked, every ring sends its own message, as before this existed.
"""

from __future__ import annotations

import logging
from typing import Any

from aigc_saas.jobs import events

log = logging.getLogger(__name__)

# How long a pending doorbell holds other rings of its queue back. A worker with a free thread answers a message
# within milliseconds; one that waits longer in the broker (every worker busy) only lets the next ring send another.
HOLD_MS = 5000


def key(queue: str) -> str:
    return f"aigc:doorbell:{queue}"


def covered(queue: str, job_id: Any) -> bool:
    """True when a doorbell of `queue` is already on its way (this job needs no message of its own); otherwise
    this ring now holds the queue's key and must send the message, or `answered` when it cannot."""
    if events.recently_failed():
        return False
    try:
        return not events.client().set(key(queue), str(job_id or ""), nx=True, px=HOLD_MS)
    except Exception as exc:  # noqa: BLE001 - Redis cannot say: send the message (the broker may still take it)
        log.debug("doorbell key of %s unavailable (%s); ringing", queue, exc)
        return False


def answered(queue: str) -> None:
    """A worker is about to read `queue`: rings from now on send their own message."""
    try:
        events.client().delete(key(queue))
    except Exception as exc:  # noqa: BLE001 - the key expires on its own; later rings wait at most HOLD_MS
        log.debug("could not clear the doorbell key of %s (%s)", queue, exc)
