"""Release cards for the card refresher: render one from the current state, record where a newly
posted one is, and the last-resort final card of a run whose store went away."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from slack_sdk.errors import SlackApiError

from bot.core.errors import NotFound
from bot.services.releases import ReleaseService, ReleaseState
from bot.slack.blocks import Message, escape, quiet
from bot.slack.card import CardView, render_card
from bot.slack.client import RateLimitedClient
from bot.slack.refresher import CardContent

log = logging.getLogger("gonogo.cards")


def state_card(state: ReleaseState, now: datetime) -> Message:
    """A release's card, drawn from everything known about it at one instant."""
    running = state.running
    return render_card(
        CardView(
            gate=state.loaded.gate,
            release=state.release,
            decision=state.decision,
            results=state.results,
            now=now,
            running=frozenset(running.check_ids) if running else frozenset(),
            run_by=running.actor if running else None,
            run_started=running.started_at if running else None,
            last_run=state.last_run,
            drills=state.people.drills,
            marks=state.people.marks,
            ladder=state.ladder,
            outdated=state.outdated,
        )
    )


class ReleaseCards:
    def __init__(self, service: ReleaseService, client: RateLimitedClient) -> None:
        self.service = service
        self.client = client

    async def render(self, release_id: str) -> CardContent | None:
        """The card as the state is now (never a snapshot); None when there is no release to show."""
        store = self.service.store
        release = await store.get_release(release_id)
        if release is None:
            return None
        try:
            state = await self.service.state(release)
        except NotFound:  # its gate was removed from the configuration
            return None
        channel = release.card_channel or state.loaded.gate.channel
        # A card posted before the refresher kept its location: adopt it instead of posting another.
        adopt = release.card_ts if not await store.card_managed(release_id) else None
        card = state_card(state, self.service.clock())
        # A re-post must not ping the signers and user groups again: it goes out without mentions,
        # and the full card follows as an edit (Slack notifies nobody for an edit), see `posted`.
        if await store.card_moving(release_id):
            card = quiet(card)
        return CardContent(channel=channel, message=card, ts=adopt)

    async def posted(self, release_id: str, channel: str, ts: str) -> None:
        """A card was posted: the release learns where (its first card's ts starts the thread), and a
        card it replaced (a repost) becomes a pointer to it."""
        service = self.service
        release = await service.store.get_release(release_id)
        if release is not None:
            await service.update_release(
                release,
                lambda r: r.model_copy(update={"card_channel": channel, "card_ts": ts, "thread_ts": r.thread_ts or ts}),
                None,
            )
        moved = await service.store.take_moved_card(release_id)
        if moved is not None and release is not None:
            await service.mark_card(release)  # the full card, as an edit of the quiet one
        if moved is not None and moved[1] != ts:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_update(
                    channel=moved[0],
                    ts=moved[1],
                    text=f"The card of {escape(release_id)} moved to the bottom of the channel.",
                    blocks=[],
                )

    async def offline(self, channel: str, ts: str, state: ReleaseState) -> None:
        """A run's final card while the store is away (no dirty mark can be written)."""
        card = state_card(state, self.service.clock())
        await self.client.chat_update(channel=channel, ts=ts, text=card.text, blocks=card.blocks)
