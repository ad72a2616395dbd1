"""The one exception type for input a user can fix; the CLI prints it as one line."""


class RnnlmError(Exception):
    """Bad input or an unusable file: the message alone tells the user what to do."""
