"""covgym: gym-style RL for language models with verifiable rewards, built to study and control entropy.

Importing the package registers the ``covgym/...`` gymnasium environments.
"""

__version__ = "0.1.0"

from covgym import envs as envs  # noqa: E402  (registers the gymnasium ids)


def __getattr__(name: str):
    """``covgym.algorithms`` (and other subpackages) on first access, so ``import covgym`` stays light."""
    if name in ("algorithms",):
        import importlib

        return importlib.import_module(f"covgym.{name}")
    raise AttributeError(f"module 'covgym' has no attribute {name!r}")
