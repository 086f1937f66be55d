"""Exceptions that carry a message meant for the person at the keyboard."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from a user (config, arguments, files): the message says what was expected and received."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or does not match the config it is loaded into."""


class DatasetError(UserError):
    """A dataset file is missing keys, truncated or corrupt."""
