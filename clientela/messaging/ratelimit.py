"""How fast a worker hands messages to a provider: one evenly spaced slot per message.

The limit is per worker process and per channel (``email_rate``, ``sms_rate``), shared by
every activity the process runs; providers' own limits (Twilio's messages per second per
sender, an SMTP relay's hourly quota) are what it is for.
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._next = 0.0

    async def wait(self) -> None:
        """Wait for this message's slot. Reading and booking the slot happen without an await
        in between, so concurrent senders on one event loop each get their own slot."""
        if self.per_second <= 0:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + 1 / self.per_second
        if slot > now:
            await asyncio.sleep(slot - now)


_limiters: dict[str, RateLimiter] = {}


def limiter(channel: str, per_second: float) -> RateLimiter:
    """The process's limiter for ``channel`` (replaced if the configured rate changed)."""
    current = _limiters.get(channel)
    if current is None or current.per_second != per_second:
        current = _limiters[channel] = RateLimiter(per_second)
    return current
