"""Message counts said the same way everywhere (CLI, demo, reports): words, not dict text."""

from __future__ import annotations

from collections.abc import Mapping

#: Each ledger outcome as people read it, in the order they care about.
WORDS = {
    "sent": "sent",
    "delivered": "delivered",
    "deferred": "waiting for quiet hours",
    "suppressed": "not sent (no consent, suppressed or capped)",
    "failed": "failed",
}


def said(counts: Mapping[str, int]) -> str:
    """``{"sent": 6, "deferred": 35}`` -> ``6 sent, 35 waiting for quiet hours``."""
    parts = [f"{counts[k]:,} {w}" for k, w in WORDS.items() if counts.get(k)]
    parts += [f"{n:,} {k}" for k, n in sorted(counts.items()) if k not in WORDS and n]
    return ", ".join(parts) or "none"
