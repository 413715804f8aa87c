"""The single customer record and everything recorded against it."""

from models.campaign import Campaign, CampaignMember
from models.customer import (
    Channel,
    Consent,
    ConsentRecord,
    Customer,
    HashSalt,
    Suppression,
    Tombstone,
    TopicPreference,
)
from models.history import Complaint, ComplaintState, Direction, Interaction, Transaction
from models.ledger import DeliveryReport, Message, MessageState
from models.order import Order
from models.outbox import JourneyOutbox
from models.people import ApiToken, AuditEvent, ConsoleSession, User
from models.predictive import PredictiveModel
from models.rules import CustomerDecision, RankingValue, RuleRun, RuleVersion, TierChange

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Campaign",
    "CampaignMember",
    "Channel",
    "Complaint",
    "ComplaintState",
    "Consent",
    "ConsentRecord",
    "ConsoleSession",
    "Customer",
    "CustomerDecision",
    "DeliveryReport",
    "Direction",
    "HashSalt",
    "Interaction",
    "JourneyOutbox",
    "Message",
    "MessageState",
    "Order",
    "PredictiveModel",
    "RankingValue",
    "RuleRun",
    "RuleVersion",
    "Suppression",
    "TierChange",
    "Tombstone",
    "TopicPreference",
    "Transaction",
    "User",
]
