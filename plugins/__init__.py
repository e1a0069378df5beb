"""inferflux's bundled plugins, each registered through the ``inferflux`` entry points."""
