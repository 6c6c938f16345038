"""Models of the simulator app."""
