"""Reading the images a task names: a `data:` URL, an http(s) URL, or a file on this machine.

Every image reference a user gives — in a dataset, in `record_attempt`, in a stored attempt
read back for a critique — is read by `read_image`, the one place that decides what may be read
and how much: files and data URLs are decoded here, capped at `MAX_IMAGE_BYTES`, and must be
PNG, JPEG, GIF or WebP (the formats both providers take), told by their bytes, not their names.
An http(s) URL is passed on as it is, for the provider to fetch: ted-mcp itself makes no
request except to the model endpoints the user configured.

Reading is blocking file I/O: async callers run it in a worker thread.
"""

import base64
import binascii
import hashlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from ted.errors import InvalidInput
from ted.llm.base import ImagePart

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Anthropic's limit per image; OpenAI's is higher
MAX_IMAGES = 32

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def read_image(ref: str) -> ImagePart:
    """The image `ref` names, ready to send; InvalidInput saying what to fix when it cannot be used."""
    ref = ref.strip()
    parsed = urlparse(ref)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise InvalidInput(f"Image URL {_shown(ref)} has no host.")
        return ImagePart(url=ref)
    if parsed.scheme == "data":
        return _inline(_data_url_bytes(ref), ref)
    if parsed.scheme == "file":
        ref = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise InvalidInput(
            f"Image {_shown(ref)} has the scheme {parsed.scheme!r}: give a file path, a data: URL or an http(s) URL."
        )
    return _inline(_file_bytes(Path(ref).expanduser()), ref)


def read_images(refs: Sequence[str]) -> list[ImagePart]:
    if len(refs) > MAX_IMAGES:
        raise InvalidInput(f"{len(refs)} images is over the limit of {MAX_IMAGES} per task.")
    return [read_image(ref) for ref in refs]


def image_key(part: ImagePart) -> str:
    """What identifies an image: its bytes, or for a URL (never fetched here) the URL itself."""
    return hashlib.sha256((part.data or part.url or "").encode()).hexdigest()


def _file_bytes(path: Path) -> bytes:
    if not path.is_absolute():
        raise InvalidInput(f"Image path {_shown(str(path))} is relative: give an absolute path (or a data: URL).")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)  # bounded: a huge file is refused, never read whole
    except FileNotFoundError:
        raise InvalidInput(f"Image file {_shown(str(path))} does not exist.") from None
    except IsADirectoryError:
        raise InvalidInput(f"Image path {_shown(str(path))} is a folder, not an image file.") from None
    except OSError as e:
        raise InvalidInput(f"Image file {_shown(str(path))} cannot be read ({e.strerror}).") from None
    return data


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


def _inline(data: bytes, ref: str) -> ImagePart:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"Image {_shown(ref)} is over {MAX_IMAGE_BYTES // 1_048_576} MB; send a smaller image.")
    media_type = next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), None)
    if media_type is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        media_type = "image/webp"
    if media_type is None:
        raise InvalidInput(f"Image {_shown(ref)} is not a PNG, JPEG, GIF or WebP image.")
    return ImagePart(data=base64.b64encode(data).decode(), media_type=media_type)


def _shown(ref: str) -> str:
    # A data URL can be megabytes long: name it by its start.
    return repr(ref if len(ref) <= 120 else ref[:60] + "…")
