"""Campaigns: specs, audiences, control groups, execution and honest reports."""
