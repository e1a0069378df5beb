"""Bundled guardrails."""
