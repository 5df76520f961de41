"""Errors that are the user's to fix (bad data, bad config): the CLI prints them in one line."""


class RecsysError(Exception):
    """Base of errors reported to the user without a traceback."""


class ConfigError(RecsysError, ValueError):
    """A config value that is well-typed but not allowed (e.g. an unknown optimizer name)."""
