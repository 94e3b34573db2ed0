"""Signing and verifying webhook requests (pure; the clock is a parameter).

Like Slack's request signing, with our own secret (GONOGO_WEBHOOK_SECRET):
`X-Gonogo-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<raw body>">` and
`X-Gonogo-Request-Timestamp: <unix seconds>`. A request more than five minutes away from our
clock is refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Gonogo-Request-Timestamp"
SIGNATURE_HEADER = "X-Gonogo-Signature"
MAX_SKEW_S = 5 * 60
VERSION = "v0"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> str | None:
    """None when the request is authentic and fresh; otherwise why not (safe to answer with)."""
    if not timestamp or not signature:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    try:
        moment = int(timestamp)
    except ValueError:
        return f"{TIMESTAMP_HEADER} must be unix seconds"
    if abs(now - moment) > MAX_SKEW_S:
        return "request timestamp is more than 5 minutes away from the server's clock"
    if not hmac.compare_digest(sign(secret, moment, body).encode(), signature.strip().encode()):
        return "bad signature"
    return None
