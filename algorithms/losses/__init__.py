"""Policy losses, one a module; each registers itself (``covgym.algorithms.registry.load_builtins``)."""
