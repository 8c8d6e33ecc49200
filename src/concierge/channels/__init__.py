"""Messaging channels: adapters per platform, the durable inbound queue and the outbox."""
