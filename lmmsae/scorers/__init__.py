"""Scorers: an explanation of a feature against its images, beside a random baseline (see docs/scorers.md)."""
