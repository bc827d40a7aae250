"""The one exception type users see.

Anything raised as `CosBenchError` is printed by the CLI as a single line
(`error: <message>`) with exit code 2 and no traceback, so its message must name
both the problem and the fix.
"""


class CosBenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""
