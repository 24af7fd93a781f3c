"""The single exception type viz3d raises for bad input."""


class Viz3dError(ValueError):
    """Bad input: a missing, unreadable or inconsistent file, or an invalid option.

    The message says what is wrong and with which file; the command line prints it as one
    line ``viz3d: error: <message>`` and exits with status 2.
    """
