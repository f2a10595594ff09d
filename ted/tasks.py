"""What identifies a task: a stable id from its content, so repeated attempts group together."""

import hashlib


def task_id_for(task: str) -> str:
    """A stable id for a task text, so repeated attempts at one task group together."""
    return "t-" + hashlib.sha256(" ".join(task.split()).encode()).hexdigest()[:16]
