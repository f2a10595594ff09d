"""Reading the images a task names: a `data:` URL, an http(s) URL, or a file on this machine.

Every image reference a user gives — in a dataset, in `record_attempt`, in a stored attempt
read back for a critique — is read by `read_image`, the one place that decides what may be read
and how much: files and data URLs are decoded here, capped at `MAX_IMAGE_BYTES`, and must be
PNG, JPEG, GIF or WebP (the formats both providers take), told by their bytes, not their names.
An http(s) URL is passed on as it is, for the provider to fetch: ted-mcp itself makes no
request except to the model endpoints the user configured.

A file is read through `ted.files`: when an MCP client named it, only inside the data folders
(`roots`, from TED_DATA_DIRS), with one error outside them that says nothing about the file;
always in a bounded way. No error quotes the reference, which may come from a dataset's content;
callers say which image it was (`images[2]`, a dataset's line).

Reading is blocking file I/O: async callers run it in a worker thread.
"""

import base64
import binascii
import hashlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from ted.errors import InvalidInput
from ted.files import Roots, read_bytes
from ted.llm.base import ImagePart

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Anthropic's limit per image; OpenAI's is higher
MAX_IMAGES = 32

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def read_image(ref: str, roots: Roots = None) -> ImagePart:
    """The image `ref` names, ready to send; InvalidInput saying what to fix when it cannot be used.

    `roots`: the folders a file must be in, when a client named it (None: any absolute path)."""
    ref = ref.strip()
    parsed = urlparse(ref)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise InvalidInput("The image URL has no host.")
        return ImagePart(url=ref)
    if parsed.scheme == "data":
        return _inline(_data_url_bytes(ref))
    if parsed.scheme == "file":
        ref = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise InvalidInput("The image has a URL scheme other than data: or http(s): give one of those or a file path.")
    return _inline(_file_bytes(ref, roots))


def read_images(refs: Sequence[str], roots: Roots = None) -> list[ImagePart]:
    if len(refs) > MAX_IMAGES:
        raise InvalidInput(f"{len(refs)} images is over the limit of {MAX_IMAGES} per task.")
    parts = []
    for number, ref in enumerate(refs):
        try:
            parts.append(read_image(ref, roots))
        except InvalidInput as e:
            raise InvalidInput(f"images[{number}]: {e}") from None
    return parts


def image_key(part: ImagePart) -> str:
    """What identifies an image: its bytes, or for a URL (never fetched here) the URL itself."""
    return hashlib.sha256((part.data or part.url or "").encode()).hexdigest()


def _file_bytes(ref: str, roots: Roots) -> bytes:
    path = Path(ref).expanduser()
    if not path.is_absolute():  # stored with the attempt and read again later: it must mean one file
        raise InvalidInput("The image path is relative: give an absolute path (or a data: URL).")
    return read_bytes(path, roots, limit=MAX_IMAGE_BYTES, what="Image file")


def _data_url_bytes(ref: str) -> bytes:
    header, comma, payload = ref.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InvalidInput("An image data: URL must be base64, e.g. data:image/png;base64,iVBORw0KGgo….")
    if len(payload) > (MAX_IMAGE_BYTES + 2) * 4 // 3 + 4:
        raise InvalidInput(
            f"An image data: URL holds more than {MAX_IMAGE_BYTES // 1_048_576} MB; send a smaller image."
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("An image data: URL is not valid base64.") from None


def _inline(data: bytes) -> ImagePart:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"The image is over {MAX_IMAGE_BYTES // 1_048_576} MB; send a smaller image.")
    media_type = next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), None)
    if media_type is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        media_type = "image/webp"
    if media_type is None:
        raise InvalidInput("The image is not a PNG, JPEG, GIF or WebP image.")
    return ImagePart(data=base64.b64encode(data).decode(), media_type=media_type)
