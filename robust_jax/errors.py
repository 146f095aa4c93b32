"""Errors that the launcher reports as one clear line instead of a traceback."""


class ConfigError(ValueError):
  """A config value is wrong; the message names the field and the valid values."""
