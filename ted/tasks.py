"""What a task is: its text and its images, identified by a hash of both.

Attempts at one task group under its id, and the teacher's cached solution is keyed by it, so
two problems with the same question and different figures are two tasks with two solutions.
A text-only task keeps the id its text alone always had.
"""

import functools
import hashlib
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from ted.files import Roots
from ted.images import image_key, read_images
from ted.llm.base import ImagePart, Message


def task_id_for(text: str, images: Sequence[ImagePart] = ()) -> str:
    """A stable id for a task's content: its text (whitespace normalised) and its images' bytes."""
    digest = hashlib.sha256(" ".join(text.split()).encode())
    for image in images:
        digest.update(b"\0" + image_key(image).encode())
    return "t-" + digest.hexdigest()[:16]


class Task(BaseModel):
    """A task with its images read, as the student and the teacher are shown it."""

    model_config = ConfigDict(frozen=True)

    text: str
    refs: list[str] = Field(default_factory=list, description="The images as named: paths, data: or http(s) URLs.")
    images: list[ImagePart] = Field(default_factory=list, description="The images, read.")

    @classmethod
    def read(cls, text: str, refs: Sequence[str] = (), roots: Roots = None) -> "Task":
        """Read the task's images (blocking file I/O: run it in a worker thread); files only inside
        `roots` when a client named them."""
        return cls(text=text, refs=list(refs), images=read_images(refs, roots))

    @functools.cached_property
    def id(self) -> str:
        return task_id_for(self.text, self.images)

    def message(self, text: str) -> Message:
        """A user message of `text` preceded by the task's images (the order providers recommend)."""
        return Message.user(*self.images, text)
