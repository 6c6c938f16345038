"""Simulator: a world of simulated leads for the demo, tests and benchmarks."""
