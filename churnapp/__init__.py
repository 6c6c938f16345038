"""Churnapp: tenants, agents, leads, activity ingest, features, models, scoring."""
