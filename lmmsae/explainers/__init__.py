"""Explainer plugins: a local LMM through transformers, Claude, and any OpenAI-compatible server."""
