"""Every write of interventions: policy, cohorts, variants, orchestration, escalations."""
