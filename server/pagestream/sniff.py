"""What kind of document an upload is, from its bytes; the file name only tells Markdown from text.

:func:`sniff` runs in the server (in a thread), on the first 64 KiB of every upload, so it
parses nothing: it looks for signatures, and opens a zip's directory only after checking
from its end record that the directory is small.
"""

from __future__ import annotations

import codecs
import os
import re
import struct
import zipfile
import zlib
from pathlib import PurePath

from pagestream.jobs import DocumentKind

__all__ = ["sniff"]

_EPUB_MIMETYPE = b"application/epub+zip"
_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose BOM it starts with
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def sniff(head: bytes, path: str | os.PathLike[str] | None = None, filename: str | None = None) -> DocumentKind | None:
    """The kind of the document whose first bytes are ``head``, or None if it is none we support.

    ``path`` is the whole file (only read to look inside a zip); ``filename`` is the name the
    upload came with, used only to call a text with a Markdown suffix Markdown. No bytes at
    all are no kind.
    """
    if not head:
        return None
    # PDFium accepts "%PDF" anywhere in the first 1024 bytes, even without the "-" (the
    # corpus has such files), so that is what counts here.
    if b"%PDF" in head[:1024]:
        return DocumentKind.pdf
    if head.startswith(b"PK\x03\x04"):
        return DocumentKind.epub if _is_epub(head, path) else None
    if _is_html(head):
        return DocumentKind.html
    text = _as_text(head)
    if text is None:
        return None
    if (filename and PurePath(filename).suffix.lower() in _MARKDOWN_SUFFIXES) or _looks_like_markdown(text):
        return DocumentKind.markdown
    return DocumentKind.text


# -- EPUB


def _is_epub(head: bytes, path: str | os.PathLike[str] | None) -> bool:
    # OCF asks for an uncompressed "mimetype" entry first, so a conforming EPUB shows it in the
    # first local header, and nothing needs opening.
    if len(head) >= 30:
        method, size, name_length, extra_length = struct.unpack_from("<H8xI4xHH", head, 8)
        name_end = 30 + name_length
        data_start = name_end + extra_length
        mimetype = head[data_start : data_start + size].strip()
        if method == 0 and head[30:name_end] == b"mimetype" and mimetype == _EPUB_MIMETYPE:
            return True
    if path is None:
        return False
    try:
        if not _small_zip_directory(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "META-INF/container.xml" in names:
                return True
            if "mimetype" in names:
                info = archive.getinfo("mimetype")
                return info.file_size <= 64 and archive.read(info).strip() == _EPUB_MIMETYPE
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError,
            RuntimeError, zlib.error):  # fmt: skip
        return False
    return False


def _small_zip_directory(path: str | os.PathLike[str]) -> bool:
    """Whether the zip's end record promises a directory small enough to read in the server.

    zipfile builds an object per directory entry; a crafted upload of millions of tiny
    entries would cost gigabytes. Real EPUBs are far below 65535 entries (no zip64).
    """
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - (22 + 0xFFFF)))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return False
    entries: int
    directory_size: int
    entries, directory_size = struct.unpack_from("<HI", tail, at + 10)
    # 1 MiB of directory is some 10,000 entries, the most an EPUB may have: the server does
    # not open anything bigger to look inside (the child enforces the real limits).
    return entries < 0xFFFF and directory_size <= 2**20


# -- HTML

_PROLOGUE = re.compile(r"(?:\s+|<!--.*?-->|<\?xml.*?\?>)*", re.DOTALL)
_HTML_START = re.compile(r"<!doctype\s+html|<html[\s>]", re.IGNORECASE)
_HTML_EARLY = re.compile(r"<(?:head|body)[\s>/]", re.IGNORECASE)


def _is_html(head: bytes) -> bool:
    """After a BOM, whitespace, comments and an XML declaration: a doctype, <html>, or an early <head>/<body>."""
    start = head[:4096]
    for bom, encoding in _BOMS:
        if start.startswith(bom):
            markup = start[len(bom) :].decode(encoding, errors="replace")
            break
    else:
        markup = start.decode("latin-1")  # the markers are ASCII; any ASCII-compatible charset will do
    rest = markup[_PROLOGUE.match(markup).end() :]  # type: ignore[union-attr]  # matches the empty string
    if _HTML_START.match(rest):
        return True
    return rest.startswith("<") and _HTML_EARLY.search(rest, 0, 1024) is not None


# -- Plain text and Markdown

# Control characters other than \t \n \f \r; text may have a few, binary has many.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def _as_text(head: bytes) -> str | None:
    """``head`` decoded, if it is text: UTF-8, or UTF-16/32 with a BOM, no NUL, few control characters."""
    encoding, start = "utf-8", 0
    for bom, name in _BOMS:
        if head.startswith(bom):
            encoding, start = name, len(bom)
            break
    # final=False: the head may end in the middle of a character; that tail is not an error.
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    try:
        text = decoder.decode(head[start:], final=False)
    except UnicodeDecodeError:
        return None
    if "\0" in text:
        return None
    controls = len(_CONTROL.findall(text))
    if controls * 100 > len(text):  # more than 1%
        return None
    return text


# Every repetition that can fail after scanning is bounded: sniff runs on untrusted bytes in the
# server, and an unbounded one turns a line of "[a[a[a..." into seconds of backtracking.
_FENCE = re.compile(r"^ {0,3}(?:```|~~~)", re.MULTILINE)
_LINK = re.compile(r"!?\[[^\]\n]{1,200}\]\([^()\s]{1,500}(?:[ \t]{1,10}\"[^\"\n]{0,200}\")?\)")
_SETEXT = re.compile(r"^ {0,3}\S[^\n]*\n {0,3}(?:={3,}|-{3,})[ \t]*$", re.MULTILINE)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_WEAK_SIGNS = (
    _HEADING,
    re.compile(r"^ {0,3}(?:[*+-]|\d{1,9}[.)])[ \t]+\S", re.MULTILINE),  # list item
    re.compile(r"(\*\*|__)\S[^\n]{0,100}?\S\1|`[^`\n]+`"),  # strong emphasis, code span
    re.compile(r"^ {0,3}>[ \t]?\S", re.MULTILINE),  # block quote
    re.compile(r"^ {0,3}\|?[ \t]*:?-{3,}:?[ \t]*\|", re.MULTILINE),  # table delimiter row
)


def _looks_like_markdown(text: str) -> bool:
    """Clear signs only: a fence, an inline link, a setext heading, a heading on the first line,
    or two different weaker signs (headings, lists, emphasis, quotes, tables) together."""
    if _FENCE.search(text) or _LINK.search(text) or _SETEXT.search(text):
        return True
    if _HEADING.match(text.lstrip("\n")):
        return True
    return sum(1 for sign in _WEAK_SIGNS if sign.search(text)) >= 2
