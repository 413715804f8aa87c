"""Customer service: complaint indicators."""
