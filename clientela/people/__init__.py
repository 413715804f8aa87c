"""People: users with roles and passwords (argon2id), personal API tokens, the audit trail."""
