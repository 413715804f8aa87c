"""Providers that carry messages, and how their answers are classified.

Every send ends in one of four ways, and the ledger acts on each:
accepted (``SendAccepted``), ``Transient`` (not accepted; try again later), ``Permanent`` (not
accepted; never will be) and ``InDoubt`` (the provider may have accepted it: reconcile before
any new attempt).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SendAccepted:
    provider_id: str
    note: str = ""  # recorded as the ledger row's reason (e.g. how it was reconciled)


class SendError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Transient(SendError):
    """Not accepted this time; the same message may be tried again."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(SendError):
    """Not accepted and never will be; ``suppress`` marks the address itself as unusable."""

    def __init__(self, reason: str, suppress: bool = False) -> None:
        super().__init__(reason)
        self.suppress = suppress


class InDoubt(SendError):
    """The provider may or may not have the message; reconcile before sending again."""
