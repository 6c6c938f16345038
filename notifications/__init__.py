"""Notifications: seven channels, templates, the outbox, providers, suppression."""
