"""The one exception type of recipe problems (its own module so that loader and validate both import it)."""


class ConfigError(ValueError):
    """A recipe problem; the message starts with the offending key path or file."""
