"""The one exception type of the project."""


class WaveError(ValueError):
    """Bad input: an invalid spec, shape, file or dataset.

    The message is one line that names the problem and, where there is one, the fix. The CLI
    prints it and exits with status 2.
    """


def reason(e: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): what a
    one-line WaveError quotes of an error from below."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__
