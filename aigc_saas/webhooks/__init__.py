"""Outgoing webhooks: URL policy, pinned delivery, and a row per attempt (the outbox)."""
