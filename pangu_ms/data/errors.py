"""The single exception type of the data pipeline.

Every user-facing problem (missing file, empty corpus, unknown corpus name, unreadable tokenizer, bad
sequence length, vocabulary too large, mismatched prepared dataset, ...) is raised as :class:`DataError`
with a one-line message that names the offending thing.  ``tools/preprocess_data.py`` prints it as
``error: <message>`` and exits with status 2; the training entry point can do the same.
"""


class DataError(ValueError):
    """A clear, one-line, user-facing error from the data pipeline."""
