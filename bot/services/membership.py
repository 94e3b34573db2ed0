"""Who holds a role: its `users` plus the members of its Slack user group.

User groups come from `usergroups.users.list`, cached in Redis for a few minutes so a burst of
clicks costs one Slack call. When Slack cannot be reached the last list we saw is used (and the
log says so): refusing every sign-off during a Slack hiccup would be worse than a list a few
minutes old, and an empty list fails closed anyway.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from bot.core.gate import Signoff
from bot.store import keys
from bot.store.store import Store

log = logging.getLogger("gonogo.membership")

USERGROUP_TTL_S = 300


class UserGroups(Protocol):
    """Slack's user group directory (the server passes its Web API client): this layer reads it but
    does not import Slack's client."""

    async def usergroups_users_list(self, *, usergroup: str, **kwargs: Any) -> Any: ...


class Membership:
    def __init__(self, store: Store, directory: UserGroups, ttl_s: int = USERGROUP_TTL_S) -> None:
        self.store = store
        self.directory = directory
        self.ttl_s = ttl_s

    async def members(self, role: Signoff) -> frozenset[str]:
        users = set(role.users)
        if role.usergroup:
            users |= await self.usergroup(role.usergroup)
        return frozenset(users)

    async def holds(self, role: Signoff, user: str) -> bool:
        return user in role.users or user in await self.members(role)

    async def usergroup(self, group_id: str) -> set[str]:
        cached = await self.store.cache_get(keys.usergroup(group_id))
        if cached is not None:
            return set(json.loads(cached))
        try:
            response = await self.directory.usergroups_users_list(usergroup=group_id)
            found: list[object] = response.get("users") or []
            users = [str(u) for u in found]
        except Exception as exc:  # Slack's errors, the network's: whatever the directory raises
            last = await self.store.cache_get(keys.usergroup_last_known(group_id))
            log.warning(
                "user group lookup failed, using the last known members",
                extra={"usergroup": group_id, "error": type(exc).__name__, "have_last_known": last is not None},
            )
            return set(json.loads(last)) if last else set()
        encoded = json.dumps(sorted(users))
        await self.store.cache_set(keys.usergroup(group_id), encoded, self.ttl_s)
        await self.store.cache_set(keys.usergroup_last_known(group_id), encoded, None)
        return set(users)
