"""One exception type for every user mistake: the CLI prints its message, no traceback."""


class RoadmapError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
