"""Attachment filenames safe to show and to store, and an extension for nameless parts.

A filename is the sender's text: it may hold paths, controls, dot-files or DOS device
names, and is shown to operators and written to disk by them.
"""

from __future__ import annotations

import re
import unicodedata

from mailroute.core.letter.headers import WSP_RUN

_RESERVED_NAMES = frozenset(
    ["con", "prn", "aux", "nul", "clock$", "conin$", "conout$"]
    + [f"com{i}" for i in range(10)]
    + [f"lpt{i}" for i in range(10)]
)
_UNSAFE_CHARS = re.compile(r'[<>:"|?*\\/]')
_EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/pjpeg": ".jpg",
    "image/gif": ".gif", "image/bmp": ".bmp", "image/tiff": ".tif", "image/webp": ".webp",
    "image/svg+xml": ".svg", "image/heic": ".heic", "application/pdf": ".pdf",
    "application/zip": ".zip", "application/x-zip-compressed": ".zip",
    "application/x-rar-compressed": ".rar", "application/vnd.rar": ".rar",
    "application/x-7z-compressed": ".7z", "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls", "application/rtf": ".rtf", "text/rtf": ".rtf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "application/xml": ".xml", "text/xml": ".xml", "application/json": ".json",
    "text/plain": ".txt", "text/html": ".html", "text/csv": ".csv", "text/calendar": ".ics",
    "text/x-vcard": ".vcf", "text/vcard": ".vcf", "message/rfc822": ".eml",
    "message/delivery-status": ".txt", "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt", "application/ms-tnef": ".dat",
    "application/pkcs7-signature": ".p7s", "application/x-pkcs7-signature": ".p7s",
    "application/pgp-signature": ".asc", "application/octet-stream": ".bin",
}  # fmt: skip
MAX_FILENAME = 150


def guess_extension(content_type: str) -> str:
    """File extension for a content type (own table: `mimetypes` reads system files)."""
    return _EXTENSIONS.get(content_type, ".bin")


def sanitize_filename(name: str, content_type: str, index: int) -> str:
    """A filename safe to show and to store: no paths, controls, dot-files or DOS devices."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(
        ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
    )
    name = _UNSAFE_CHARS.sub("_", name)
    name = WSP_RUN.sub(" ", name).strip().lstrip(".").strip().rstrip(". ")
    if not name or not name.strip("._- "):
        return f"attachment-{index}{guess_extension(content_type)}"
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16 or not stem:
        stem, ext = name, ""
    if stem.split(".")[0].strip().lower() in _RESERVED_NAMES:
        stem = "_" + stem
    suffix = f".{ext}" if ext else ""
    stem = stem[: MAX_FILENAME - len(suffix)].rstrip(". ") or f"attachment-{index}"
    return stem + suffix
