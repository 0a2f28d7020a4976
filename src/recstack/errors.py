"""Errors a user can act on: each names the file, row or key at fault."""


class RecstackError(Exception):
    """Base class for every error recstack raises on purpose."""


class DataError(RecstackError):
    """Bad or missing input data (names the file, row or column)."""


class ConfigError(RecstackError):
    """Bad configuration (names the key and lists the valid ones)."""
