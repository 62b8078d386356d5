"""User-facing errors.

A `DainrtError` is a mistake the user can fix (a missing file, a bad option, wrong weights). The
CLI prints its message as one line and exits non-zero, without a traceback. Anything else that
escapes is a bug and keeps its traceback.

Below the command line, errors speak in the layer's own terms: an `OptionError` names the
option as a Python parameter (`max_frames must be 1 or more, got 0`), and the command line
rewrites the name as its flag (`--max-frames must be 1 or more, got 0`).
"""


class DainrtError(Exception):
    """An error caused by the user's input; `str(err)` names the problem and the fix."""

    exit_code = 2


class OptionError(DainrtError):
    """A bad value of option `option` (a Python parameter name, e.g. `max_frames`).

    `problem` continues the option's name (`OptionError("crf", "must lie in 0..51, got 99")`),
    or places it where `{option}` stands (`OptionError("size", "bad {option} 'big': ...")`).
    """

    def __init__(self, option: str, problem: str):
        self.option = option
        self.problem = problem if "{option}" in problem else "{option} " + problem
        super().__init__(self.problem.replace("{option}", option))

    def as_flag(self) -> str:
        """The message with the option spelled as a command-line flag (`--max-frames ...`)."""
        return self.problem.replace("{option}", "--" + self.option.replace("_", "-"))
