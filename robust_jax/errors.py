"""Errors that the launcher reports as one clear line instead of a traceback."""


class ConfigError(ValueError):
  """A config value is wrong; the message names the field and the valid values."""


class CheckpointWriteError(OSError):
  """Writing a checkpoint failed (a full disk, say); earlier checkpoints are intact."""
