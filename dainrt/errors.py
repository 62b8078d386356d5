"""User-facing errors.

A `DainrtError` is a mistake the user can fix (a missing file, a bad option, wrong weights). The
CLI prints its message as one line and exits non-zero, without a traceback. Anything else that
escapes is a bug and keeps its traceback.
"""


class DainrtError(Exception):
    """An error caused by the user's input; `str(err)` names the problem and the fix."""

    exit_code = 2
