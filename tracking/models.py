"""Models of the tracking app."""
