"""Every Redis key gonogo uses, in one place (documented in docs/redis.md).

All keys start with `gonogo:`. Keys of one gate share the hash tag `{g:<gate>}`, so every
multi-key Lua script and MULTI block touches a single Redis Cluster slot.
"""

from __future__ import annotations

PREFIX = "gonogo"


def _gate(gate_id: str) -> str:
    return f"{PREFIX}:{{g:{gate_id}}}"


def _release(release_id: str) -> str:
    gate_id, _, version = release_id.partition("@")
    return f"{_gate(gate_id)}:r:{version}"


def open_release(gate_id: str) -> str:
    """STRING: id of the gate's release that is not closed (open or decided)."""
    return f"{_gate(gate_id)}:open"


def release_index(gate_id: str) -> str:
    """ZSET: every release id of the gate, scored by opening time (for listings)."""
    return f"{_gate(gate_id)}:releases"


def release(release_id: str) -> str:
    """STRING: the Release as JSON (with a `rev` for compare-and-set)."""
    return f"{_release(release_id)}:doc"


def results(release_id: str) -> str:
    """HASH: check id -> latest CheckResult JSON."""
    return f"{_release(release_id)}:results"


def runs(release_id: str) -> str:
    """LIST: RunRecord JSON, newest first, capped."""
    return f"{_release(release_id)}:runs"


def audit(release_id: str) -> str:
    """STREAM: every state change of the release (type, actor, at, data)."""
    return f"{_release(release_id)}:audit"


def run_lock(release_id: str) -> str:
    """STRING with a lease (PX): RunLease JSON of the run in progress."""
    return f"{_release(release_id)}:lock:run"


def signatures(release_id: str) -> str:
    """HASH: "<role>|<user>" -> Signature JSON (the member's current vote for that role)."""
    return f"{_release(release_id)}:signatures"


def acceptances(release_id: str) -> str:
    """HASH: risk id -> RiskAcceptance JSON."""
    return f"{_release(release_id)}:acceptances"


def override(release_id: str) -> str:
    """STRING: OverrideRequest JSON."""
    return f"{_release(release_id)}:override"


def override_approvals(release_id: str, request_id: str) -> str:
    """HASH: user -> OverrideApproval JSON, for one override request (deleted when it ends).

    Keyed by the request id, so an approval of a request that was replaced can never count for
    the new one; keyed by user inside, so one person counts once across the whole override."""
    return f"{_release(release_id)}:override:{request_id}:approvals"


def bundle(release_id: str) -> str:
    """STRING: the evidence bundle JSON frozen by `/gonogo decide`."""
    return f"{_release(release_id)}:bundle"


def promotions(release_id: str) -> str:
    """LIST: one frozen evidence bundle JSON per promotion to a rollout stage, oldest first."""
    return f"{_release(release_id)}:promotions"


def decision_inputs(release_id: str) -> list[str]:
    """Every key a release's verdict is computed from: watched while a promotion decides, so a vote,
    a result or a mark that lands meanwhile makes the promotion start over on fresh facts."""
    return [
        release(release_id),
        results(release_id),
        signatures(release_id),
        acceptances(release_id),
        manual(release_id),
        override(release_id),  # and the approvals of the request it holds (keyed by its id)
        external_results(release_id),
        drill_latest(release_id.partition("@")[0]),  # drills belong to the gate, same hash tag
    ]


def handled(release_id: str, token: str) -> str:
    """STRING with TTL: a click (user + action_ts) already recorded; retries and replicas skip it.

    Under the release's hash tag so the Lua script that records the click can check it atomically."""
    return f"{_release(release_id)}:handled:{token}"


def stale_notified(release_id: str) -> str:
    """SET: signatures ("<role>|<user>|<signed at>") whose signers were already asked to sign again."""
    return f"{_release(release_id)}:stale-notified"


def manual(release_id: str) -> str:
    """HASH: manual check id -> ManualMark JSON (who marked it done, with what evidence)."""
    return f"{_release(release_id)}:manual"


def external_results(release_id: str) -> str:
    """HASH: external check id -> ExternalResult JSON (latest reported over the webhook, with its sha)."""
    return f"{_release(release_id)}:external"


# --- gate level: drills, the operation lease, webhook events ---------------------------------


def drill_runs(gate_id: str, drill_id: str) -> str:
    """LIST: DrillRun JSON of one drill, newest first, capped (drills belong to the gate)."""
    return f"{_gate(gate_id)}:drill:{drill_id}:runs"


def drill_latest(gate_id: str) -> str:
    """HASH: drill id -> the latest DrillRun JSON (what every release of the gate decides on)."""
    return f"{_gate(gate_id)}:drills"


def gate_audit(gate_id: str) -> str:
    """STREAM: gate-level changes that belong to no release (drill runs), like a release's audit."""
    return f"{_gate(gate_id)}:audit"


def runs_in_flight(gate_id: str) -> str:
    """HASH lease token -> {"release", "lease"} JSON: the gate's runs that hold (or held) a run lock
    and are not recorded yet. Written with the lock, removed with it: an entry whose lock is gone is
    a run whose process died (swept: recorded as interrupted, the card refreshed)."""
    return f"{_gate(gate_id)}:runs:in-flight"


def operation_lease(gate_id: str) -> str:
    """STRING with a lease (PX): OperationLease JSON of the gate's run, drill or rollback in progress."""
    return f"{_gate(gate_id)}:lock:operation"


def events(gate_id: str) -> str:
    """STREAM: every webhook event accepted for the gate (masked), written with its effects."""
    return f"{_gate(gate_id)}:events"


def event_seen(gate_id: str, event_id: str) -> str:
    """STRING with TTL: a webhook event id already accepted (idempotency key); its value is the type."""
    return f"{_gate(gate_id)}:event:{event_id}"


def usergroup(group_id: str) -> str:
    """STRING with TTL: cached member ids of a Slack user group (JSON list)."""
    return f"{PREFIX}:usergroup:{group_id}"


def usergroup_last_known(group_id: str) -> str:
    """STRING, no TTL: the last member list Slack gave us, used while Slack is unreachable."""
    return f"{PREFIX}:usergroup:{group_id}:last"


def dedupe(scope: str, key: str) -> str:
    """STRING with TTL: marks a Slack payload (or webhook event) as handled, across replicas."""
    return f"{PREFIX}:dedupe:{scope}:{key}"


# --- the road to Slack: outbox, delivered markers, cards (docs/delivery.md) -------------------


def outbox(gate_id: str) -> str:
    """STREAM: the gate's undelivered notices (field `notice`: Notice JSON). Entries are deleted once
    delivered or dead-lettered, so its length is the backlog. Consumer group: outbox.GROUP."""
    return f"{_gate(gate_id)}:outbox"


def dead_letters(gate_id: str) -> str:
    """STREAM, capped: notices given up on (too old, permanent Slack error), with the reason."""
    return f"{_gate(gate_id)}:outbox:dead"


def delivered(gate_id: str, notice_key: str) -> str:
    """STRING with TTL: the Slack `ts` a notice was posted as. Present = never post it again."""
    return f"{_gate(gate_id)}:delivered:{notice_key}"


def sending(gate_id: str, notice_key: str) -> str:
    """STRING with a lease (PX): the deliverer currently sending this notice (token)."""
    return f"{_gate(gate_id)}:sending:{notice_key}"


def outbox_offers(gate_id: str) -> str:
    """HASH: entry id -> `method|consumer|until ms` for outbox entries a deliverer refused by a 429
    offers to the others until its method's gate opens again; HDEL decides who sends it."""
    return f"{_gate(gate_id)}:outbox:offers"


def outbox_offering() -> str:
    """SET: gate ids whose `outbox_offers` hash may hold offers, so deliverers look at those only.
    Not under a gate's hash tag (like `outbox_gates`); an extra member costs one look."""
    return f"{PREFIX}:outbox:offering"


def deliverers() -> str:
    """ZSET: consumer name -> when its deliverer last said it is alive (Redis time, ms). How many
    replicas share the outboxes decides how a burst to one channel is read (bot/slack/lanes.py)."""
    return f"{PREFIX}:outbox:deliverers"


def outbox_gates() -> str:
    """SET: gate ids that have an outbox, for deliverers and refreshers to watch. Not under a gate's
    hash tag, so never written inside a gate's atomic step (registering early is harmless)."""
    return f"{PREFIX}:outbox:gates"


def card(release_id: str) -> str:
    """HASH: the release card on Slack. `wanted` (revision, bumped with every state change that
    shows on the card), `wanted_at` (ms), `shown` (revision Slack shows), `shown_at` (ms),
    `channel`, `ts`."""
    return f"{_release(release_id)}:card"


def cards_dirty(gate_id: str) -> str:
    """SET: release ids of the gate whose card may be behind (wanted > shown)."""
    return f"{_gate(gate_id)}:cards:dirty"


def card_lease(release_id: str) -> str:
    """STRING with a lease (PX): the refresher (token) that owns this card for now."""
    return f"{_release(release_id)}:card:lease"


def channel_pace(channel: str) -> str:
    """HASH: token bucket (tokens, at ms) pacing posts into one Slack channel across replicas."""
    return f"{PREFIX}:pace:{channel}"


# --- the scheduler: claimed units of work and the facts due times derive from (docs/scheduling.md)


def claims(release_id: str) -> str:
    """SET: units of scheduled work done for the release (`remind|<role>|<user>|<n>`,
    `escalate|<role>|<n>`, `prelaunch|<offset>`, `postdeploy|<n>`, ...). A member = done, once."""
    return f"{_release(release_id)}:claims"


def schedule(release_id: str) -> str:
    """HASH: the facts a release's due times derive from. `sent|<role>|<user>` (JSON: reminders
    sent, last at, the notice key of the last DM), `count|<user>` (reminders to
    them, all roles: capped by `max` in the claim), `since|<role>|<user>` (waited on since),
    `snooze|<user>` (ISO time), `esc|<role>` (JSON: escalations sent, last at),
    `esc-at|<role>` (when the role reached escalate_after), `postdeploy` (JSON: start, runs, failed)."""
    return f"{_release(release_id)}:schedule"


def gate_claims(gate_id: str) -> str:
    """SET: gate-level scheduled units done (freeze start / end announcements, by edge key)."""
    return f"{_gate(gate_id)}:claims"


def user_zone(user: str) -> str:
    """STRING with TTL: a Slack user's time zone (users.info `tz`; "" when Slack has none)."""
    return f"{PREFIX}:tz:{user}"
