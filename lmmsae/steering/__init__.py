"""Steering with SAE features: edits at a hookpoint (steer), sweeps over strengths (sweep), and
measures of what changed (evaluate). See docs/steering.md."""
