"""Example inferflux plugins, one module each; see ``examples/README.md``.

Each module is a complete plugin: hook implementations marked with ``hookimpl`` and an
``INFERFLUX_HOOKSPEC_VERSION``. Register one with an engine directly::

    from plugin_examples import sjf_scheduler
    engine = Engine(settings, extra_plugins=[("sjf", sjf_scheduler)])

or publish it as its own distribution with an ``inferflux`` entry point naming the module,
like ``examples/third_party_backend``.
"""
