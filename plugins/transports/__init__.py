"""Bundled KV transports."""
