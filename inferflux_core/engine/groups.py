"""The choices of one prompt (``n > 1``, ``best_of``): when a follower waits for its leader's
prefill, and when it may copy the leader's prompt KV instead of prefilling it.

A follower waits only while its leader runs and prefills, so a group never waits on a leader
that cannot make progress (preempted, finished or failed): the follower then prefills itself.
"""

from __future__ import annotations

from inferflux_core.contracts import SequenceStatus
from inferflux_core.engine.stream import EngineSequence


def waits_for_leader(sequence: EngineSequence) -> bool:
    """True for a follower with no KV yet while its running leader prefills their prompt."""
    leader = sequence.state.leader
    return (
        leader is not None
        and sequence.seq_id is None
        and sequence.saved is None
        and leader.status is SequenceStatus.RUNNING
        and leader.saved is None
        and not leader.prefill_done
    )


def copy_source(sequence: EngineSequence) -> EngineSequence | None:
    """The leader whose KV holds the follower's whole prompt, if any."""
    leader = sequence.state.leader
    if leader is not None and leader.seq_id is not None and leader.prefill_done:
        return leader
    return None


def followers_to_fork(leader: EngineSequence) -> list[EngineSequence]:
    """Admitted followers with no KV yet: they copy the leader's prompt now."""
    return [
        follower
        for follower in leader.state.followers
        if follower.status is SequenceStatus.RUNNING and follower.seq_id is None
    ]
