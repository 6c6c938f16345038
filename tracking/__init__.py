"""Tracking: lifecycle log, analytics, business impact, live dashboard."""
