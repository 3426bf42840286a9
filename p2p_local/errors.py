"""Every error the library raises.

One root, :class:`P2PError`; each subclass names a kind of failure and each message says
what the user can do about it. Only ``cli/`` turns these into exit codes and one-line messages.
"""

from __future__ import annotations


class P2PError(Exception):
    """Root of all p2p-local errors. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class ConfigError(P2PError, ValueError):
    """A setting has an invalid value (the message names the field and the value)."""

    exit_code = 2


class InputError(P2PError, ValueError):
    """User-supplied input (a file, a message, an argument) cannot be used."""

    exit_code = 2


# --- vault -----------------------------------------------------------------------------


class VaultError(P2PError):
    """Base class for problems with an encrypted user vault."""

    exit_code = 3


class VaultNotFoundError(VaultError):
    """No vault exists for this user."""


class VaultExistsError(VaultError):
    """A vault already exists where a new one was to be created."""


class AuthenticationError(VaultError):
    """Wrong passphrase or recovery code, or data that failed authentication.

    One error for every authentication failure, so callers cannot tell *which* check failed.
    """


class IntegrityError(VaultError):
    """The vault's rows do not match its seal (deleted, truncated, reordered or foreign rows)."""


class VaultLockedError(VaultError):
    """Another process holds the vault's writer lock."""


class KeychainUnavailableError(VaultError):
    """No real OS keychain backend is available."""


# --- models and runtimes ---------------------------------------------------------------


class ModelError(P2PError):
    """Base class for model registry and runtime problems."""

    exit_code = 4


class UnknownModelError(ModelError):
    """A model name that the registry does not know."""


class ModelNotFetchedError(ModelError):
    """A model that is registered but not yet in the local cache."""


class FetchError(ModelError):
    """A model package could not be obtained (offline, unknown version, ...)."""


class ChecksumError(ModelError):
    """A file's sha256 does not match the registry."""


class ModelFormatError(ModelError):
    """A file is missing, corrupt, or not the kind of model file expected."""


class BackendUnavailableError(ModelError):
    """A runtime backend's library is not installed or cannot run here."""


# --- profile, hypernetwork, adapters ---------------------------------------------------


class EmptyHistoryError(P2PError):
    """The user's history is empty, so no profile can be built."""

    exit_code = 5


class CheckpointError(P2PError):
    """A hypernetwork checkpoint is missing, corrupt, or made for other models."""

    exit_code = 6


class AdapterError(P2PError):
    """An adapter cannot be built, exported, imported or applied."""

    exit_code = 6


class UnsupportedArchitectureError(AdapterError):
    """An export or adapter targets a model architecture this project does not support."""


# --- data, training, evaluation --------------------------------------------------------


class DatasetError(P2PError):
    """A dataset cannot be fetched, verified or converted."""

    exit_code = 7


class TrainingError(P2PError):
    """Training cannot start or continue."""

    exit_code = 8


class EvaluationError(P2PError):
    """An evaluation run cannot start or continue."""

    exit_code = 9
