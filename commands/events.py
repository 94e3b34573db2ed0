"""Events API subscriptions.

`app_home_opened` is subscribed in the manifest for the App Home tab (a later issue). Until it is
built the event is acknowledged and ignored: an unhandled event would answer 404, and Slack
disables the subscriptions of apps whose deliveries keep failing.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp


def register(app: AsyncApp) -> None:
    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any]) -> None:
        return None
