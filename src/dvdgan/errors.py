"""Errors the command line reports as one clear line and a non-zero exit."""


class DvdganError(Exception):
    """A user-facing error: bad input, bad config, missing file. Printed without a traceback."""


class ConfigError(DvdganError, ValueError):
    """An invalid preset name, override key or value."""


class DataError(DvdganError):
    """A dataset path that does not exist or holds no usable video."""


class CheckpointError(DvdganError):
    """A missing, incomplete or corrupt checkpoint."""


class WeightsError(DvdganError):
    """A detector weight file that is missing or does not match the expected architecture."""
