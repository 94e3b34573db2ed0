"""The outbox: notices and dirty cards written in the same atomic step as a state change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from bot.core.notices import Notice, Target
from bot.store import keys
from bot.store.outbox import EMIT_LUA, Emit, Outbox, emit
from tests.delivery_kit import notice

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_append_through_lua_writes_notices_and_marks_the_card(redis_client: aioredis.Redis) -> None:
    outbox = Outbox(redis_client)
    first, second = notice("pay", 1), notice("pay", 2, card_thread=True)
    await outbox.append(Emit("pay", [first, second], card_of="pay@1.0.0", at=AT))
    await outbox.append(Emit("pay", card_of="pay@1.0.0", at=AT))

    entries = await Outbox(redis_client).read(["pay"], "reader", 10)
    assert [e.notice for e in entries] == [first, second]
    card = await outbox.card("pay@1.0.0")
    assert (card.wanted, card.shown, card.wanted_at_ms) == (2, 0, int(AT.timestamp() * 1000))
    assert card.behind
    assert await outbox.dirty_cards(["pay"]) == ["pay@1.0.0"]
    assert await outbox.gates() == ["pay"]


async def test_emit_in_a_multi_block_commits_with_the_state_change(redis_client: aioredis.Redis) -> None:
    outbox = Outbox(redis_client)
    async with redis_client.pipeline(transaction=True) as tx:
        tx.set("gonogo:{g:pay}:r:1.0.0:doc", "decided")
        emit(tx, Emit("pay", [notice("pay", 1)], card_of="pay@1.0.0", at=AT))
        await tx.execute()
    assert await redis_client.xlen(keys.outbox("pay")) == 1
    assert (await outbox.card("pay@1.0.0")).wanted == 1

    # A MULTI that fails writes no notice and dirties no card.
    async with redis_client.pipeline(transaction=True) as tx:
        await tx.watch("gonogo:{g:pay}:r:1.0.0:doc")
        await redis_client.set("gonogo:{g:pay}:r:1.0.0:doc", "changed by someone else")
        tx.multi()  # type: ignore[no-untyped-call]
        tx.set("gonogo:{g:pay}:r:1.0.0:doc", "ours")
        emit(tx, Emit("pay", [notice("pay", 2)], card_of="pay@1.0.0", at=AT))
        with pytest.raises(Exception, match="Watched variable changed"):
            await tx.execute()
    assert await redis_client.xlen(keys.outbox("pay")) == 1
    assert (await outbox.card("pay@1.0.0")).wanted == 1


async def test_a_service_script_emits_only_when_its_precondition_holds(redis_client: aioredis.Redis) -> None:
    """EMIT_LUA composed into another script: the notice exists exactly when the write happened."""
    script = redis_client.register_script(
        EMIT_LUA
        + """
        if redis.call('GET', KEYS[1]) == 'decided' then return redis.error_reply('already decided') end
        redis.call('SET', KEYS[1], 'decided')
        gonogo_emit(2, 1)
        return 'ok'
        """
    )
    change = Emit("pay", [notice("pay", 1)], card_of="pay@1.0.0", at=AT)
    doc = "gonogo:{g:pay}:r:1.0.0:doc"
    assert await script(keys=[doc, *change.script_keys()], args=change.script_args()) == "ok"
    with pytest.raises(Exception, match="already decided"):
        await script(keys=[doc, *change.script_keys()], args=change.script_args())
    assert await redis_client.xlen(keys.outbox("pay")) == 1
    assert (await Outbox(redis_client).card("pay@1.0.0")).wanted == 1


def test_every_key_of_a_gate_step_is_in_one_cluster_slot() -> None:
    change = Emit("pay", [notice("pay", 1)], card_of="pay@1.0.0", at=AT)
    step = [
        *change.script_keys(),
        keys.release("pay@1.0.0"),
        keys.audit("pay@1.0.0"),
        keys.delivered("pay", "k"),
        keys.sending("pay", "k"),
        keys.dead_letters("pay"),
        keys.card_lease("pay@1.0.0"),
    ]
    assert len({key_slot(k.encode()) for k in step}) == 1


def test_emit_refuses_what_belongs_to_another_gate() -> None:
    with pytest.raises(ValueError, match="belongs to gate"):
        Emit("pay", [notice("other", 1)])
    with pytest.raises(ValueError, match="not of gate"):
        Emit("pay", card_of="other@1.0.0", at=AT)
    with pytest.raises(ValueError, match="time of the change"):
        Emit("pay", card_of="pay@1.0.0")


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ({"channel": "C1"}, True),
        ({"channel": "C1", "thread_ts": "1.2"}, True),
        ({"card_thread": True}, True),
        ({}, False),
        ({"channel": "C1", "card_thread": True}, False),
        ({"thread_ts": "1.2", "card_thread": True}, False),
    ],
)
def test_a_target_is_one_place(target: dict[str, object], ok: bool) -> None:
    if ok:
        Target.model_validate(target)
    else:
        with pytest.raises(ValueError):
            Target.model_validate(target)


def test_a_notice_round_trips_and_knows_its_lane() -> None:
    original = notice("pay", 7, card_thread=True, actor="U1")
    assert Notice.from_json(original.to_json()) == original
    assert original.lane == "card:pay@1.0.0"
    assert notice("pay", 1, channel="C9").lane == "C9"
    with pytest.raises(ValueError, match="not of gate"):
        Notice.model_validate({**original.model_dump(), "release_id": "other@1"})


async def test_a_stream_deleted_under_the_deliverer_is_recreated_not_fatal(redis_client: aioredis.Redis) -> None:
    """FLUSHDB or a deleted key under a running deliverer: claiming and touching find no group; they
    must not raise (that stopped the road for good while /readyz still said 200), and the next read
    recreates the group and delivers what is appended after."""
    outbox = Outbox(redis_client)
    await outbox.append(Emit("payments", notices=[notice("payments", 1)]))
    [held] = await outbox.read(["payments"], "a", 10)
    await redis_client.delete(keys.outbox("payments"))

    assert await outbox.claim_idle("payments", "b", 0, 10) == []
    await outbox.touch("payments", "a", [held.id])
    await outbox.append(Emit("payments", notices=[notice("payments", 2)]))
    assert [e.notice.key for e in await outbox.read(["payments"], "a", 10) if e.notice] == [notice("payments", 2).key]
