"""Command-line entry points: ``inferflux`` (server, admin) and ``inferctl`` (client)."""
