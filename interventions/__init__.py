"""Interventions: the three-stage framework, policy, holdout, escalation."""
