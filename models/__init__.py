"""The single customer record and everything recorded against it."""

from models.customer import Channel, Consent, Customer, Suppression
from models.history import Complaint, Direction, Interaction, Transaction
from models.ledger import Message, MessageState

__all__ = [
    "Channel",
    "Complaint",
    "Consent",
    "Customer",
    "Direction",
    "Interaction",
    "Message",
    "MessageState",
    "Suppression",
    "Transaction",
]
