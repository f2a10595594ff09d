"""Finding the experience ids an attempt cites.

Agents cite a lesson inline as `[E3]`, sometimes several at once as `[E3, E7]`. Only the
bracketed form counts: a bare "E3" in a trajectory is too often something else (a cell, a
variable, an exercise number).
"""

import re

_GROUP = re.compile(r"\[\s*(E\d+(?:\s*[,;]\s*E\d+)*)\s*\]")
_ID = re.compile(r"E\d+")


def cited_ids(trajectory: str, explicit: list[str] = ()) -> list[str]:
    """Ids cited explicitly and inline, each once, in order of first mention."""
    found = list(explicit)
    for group in _GROUP.finditer(trajectory):
        found.extend(_ID.findall(group.group(1)))
    # "E03" and "E3" name the same experience.
    return list(dict.fromkeys(f"E{int(i[1:])}" for i in found))
