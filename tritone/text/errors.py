"""The one error type the text frontend raises for bad input."""


class TextError(ValueError):
    """Input text that cannot be turned into phones; the message says why and what to change."""
