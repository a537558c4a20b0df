"""Credentials never leave memory: hyperparameters, checkpoints, summaries and logs get options without them.

Object-store options (``storage_options``) may carry access keys. A DataModule keeps them to read its
data, but what it saves (``hparams.yaml``, every checkpoint's hyperparameters, the LightningCLI
``config.yaml``, ``describe()`` and the run summary) holds the options with every secret-looking
entry removed, so a checkpoint can be shared. A DataModule restored from such a checkpoint reads
its credentials where the object-store client looks by default: the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) or a profile (``AWS_PROFILE``).
"""

from __future__ import annotations

from typing import Any

# Parts of option names that hold secrets (aws_secret_access_key, aws_session_token, password, key_id...).
SECRET_MARKERS: tuple[str, ...] = ("secret", "password", "passwd", "token", "credential", "access_key", "key_id",
                                   "private_key", "api_key", "auth")


def is_secret(name: str) -> bool:
    """Whether an option name looks like it holds a credential."""
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def without_secrets(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking mapping entry removed, at any depth (other values as they are)."""
    if isinstance(value, dict):
        return {key: without_secrets(item) for key, item in value.items()
                if not (isinstance(key, str) and is_secret(key))}
    if isinstance(value, list | tuple):
        return type(value)(without_secrets(item) for item in value)
    return value
