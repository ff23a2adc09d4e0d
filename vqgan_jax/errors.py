"""The one exception type the command-line tools turn into a one-line message.

Library code raises `UserError` for bad input a person can fix (a missing data folder, a config typo, a
checkpoint of another model). `train.py` / `sample.py` catch it, print `error: <message>` on one line and
exit with status 2, never a traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input with a message that says what to fix."""


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived: the run saved a checkpoint and stops; the CLI exits with 128 + signum
    (143 for SIGTERM, 130 for SIGINT), so `train.py && train.py --stage prior` does not go on."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class PeerLost(Exception):
    """Another process of a multi-process job died (a collective failed): this one stops at once,
    without a checkpoint it could not write consistently; the CLI exits with status 3."""
