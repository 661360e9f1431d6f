"""Errors a user can hit. Each carries a one-line message that names the file and what to do."""


class InstantRestoreError(Exception):
    """Base class for user-facing errors: the CLI prints `str(err)` on one line, never a traceback."""


class ImageReadError(InstantRestoreError):
    """A file that is not a readable image: empty, truncated, corrupt, too large, or not an image."""


class NoFaceError(InstantRestoreError):
    """No usable face was found where one was required."""


class WeightsError(InstantRestoreError):
    """A weight file that is missing, truncated, or does not match the architecture."""


class ConfigError(InstantRestoreError):
    """A config file or override that cannot be read or does not fit the schema."""
