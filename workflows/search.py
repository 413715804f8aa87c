"""Typed search attributes the project registers on the Temporal server."""

from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
JOURNEY = SearchAttributeKey.for_keyword("Journey")
TIER = SearchAttributeKey.for_keyword("Tier")
STAGE = SearchAttributeKey.for_keyword("Stage")
CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")

ALL = (CUSTOMER_ID, JOURNEY, TIER, STAGE, CAMPAIGN_ID)
