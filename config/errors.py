"""The one error type a user sees for a bad configuration."""


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who edits the YAML files."""
