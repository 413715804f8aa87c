"""Business rules: tiers, segments and offers in versioned rule files, decided by durable_rules."""
