"""Bundled policy stores."""
