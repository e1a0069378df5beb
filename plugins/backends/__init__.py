"""Bundled backends."""
