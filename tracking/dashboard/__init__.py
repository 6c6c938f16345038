"""The live dashboard: Django pages over tracking's selectors, fed live by /ws/tracking/."""
