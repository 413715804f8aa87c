"""The customer record (records) and what happens to it in real time (realtime)."""
