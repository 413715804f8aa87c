"""Temporal workflows: journeys and, later, campaigns. Deterministic code only."""
