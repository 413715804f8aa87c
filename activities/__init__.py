"""Temporal activities: everything that touches the database, the rules or a provider."""
