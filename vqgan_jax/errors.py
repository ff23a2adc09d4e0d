"""The one exception type the command-line tools turn into a one-line message.

Library code raises `UserError` for bad input a person can fix (a missing data folder, a config typo, a
checkpoint of another model). `train.py` / `sample.py` catch it, print `error: <message>` on one line and
exit with status 2, never a traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input with a message that says what to fix."""
