"""covgym: gym-style RL for language models with verifiable rewards, built to study and control entropy.

Importing the package registers the ``covgym/...`` gymnasium environments.
"""

__version__ = "0.1.0"

from covgym import envs as envs  # noqa: E402  (registers the gymnasium ids)
