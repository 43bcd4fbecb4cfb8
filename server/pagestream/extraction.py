"""Text extraction, page by page, from PDF, EPUB, plain text, Markdown and HTML.

This module runs in the extraction child process and knows nothing of the server: it takes a
file, its kind and some limits, and gives one :class:`PageResult` per page. It imports only
the standard library, the parsers and :mod:`pagestream.jobs`, so it can be tested and
benchmarked alone.

Failures come in two sizes:

- :class:`ExtractionError` (from :func:`open_document`) — the whole document cannot be
  read; it carries an :class:`~pagestream.jobs.ErrorCode` the job fails with.
- A page-level error — :meth:`Document.extract` returns a :class:`PageResult` whose ``error``
  is set and whose text is ``""``; the other pages go on. The one exception: an EPUB that
  inflates past its uncompressed limit while its pages are read (headers that lie, one
  entry read many times) raises ``archive_too_large`` from ``extract``: that is a hostile
  archive, not a bad page. A page number outside the document raises ValueError.

pypdfium2 is not thread-safe: use a document from one thread only (the child has one).
"""

from __future__ import annotations

import codecs
import ctypes
import os
import posixpath
import re
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ClassVar, Protocol, Self
from urllib.parse import unquote, urlsplit
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeXml
import pypdfium2 as pdfium  # type: ignore[import-untyped]
import pypdfium2.raw as pdfium_c  # type: ignore[import-untyped]
from defusedxml import DefusedXmlException
from selectolax.lexbor import LexborHTMLParser, LexborNode

from pagestream.jobs import DocumentKind, ErrorCode

__all__ = ["Document", "ExtractionError", "Limits", "PageResult", "html_text", "open_document", "split_text"]


@dataclass(slots=True)
class PageResult:
    """The text of one page and its figures."""

    #: 1-based page number in the document.
    number: int
    text: str
    #: ``len(text)``.
    chars: int
    #: ``len(text.split())``.
    words: int
    #: Milliseconds spent extracting this page, rounded to 0.001.
    ms: float
    #: ``"pdfium"``, ``"epub"``, ``"text"`` or ``"html"``.
    method: str
    #: Why this page has no text, if it failed; the page then has text ``""``.
    error: str | None = None


class ExtractionError(Exception):
    """The whole document cannot be extracted; ``code`` is what the job fails with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        # Both go to Exception.args so the error survives pickling across the child's pipe.
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one document may cost (the server builds them from its settings)."""

    #: Characters per page of plain text or Markdown that has no form feeds.
    text_page_chars: int = 4000
    #: Most bytes an EPUB may decompress to, declared or actually read.
    epub_max_uncompressed_bytes: int = 512 * 2**20
    #: Most entries an EPUB archive may have.
    epub_max_entries: int = 10000
    #: Most pages a document may have.
    max_pages: int = 20000
    #: Most characters of one page's text (the child cuts a page there and says so on the page).
    max_page_chars: int = 2_000_000

    def __post_init__(self) -> None:
        if self.text_page_chars < 1:
            raise ValueError("text_page_chars must be at least 1")


class Document(Protocol):
    """An open document; close it (or use it as a context manager) when done."""

    page_count: int

    def extract(self, number: int) -> PageResult:
        """The text of page ``number`` (1-based); a bad page gives a result with ``error`` set.

        Raises ValueError for a number outside 1..page_count (a caller's bug), and
        ExtractionError(archive_too_large) for an EPUB that inflates past its limit.
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def open_document(
    path: str | os.PathLike[str],
    kind: DocumentKind,
    *,
    password: str | None = None,
    limits: Limits = Limits(),
) -> Document:
    """Open ``path`` as a document of ``kind``; raises :class:`ExtractionError` if it cannot be read.

    ``password`` is used for PDFs only. The returned document has its ``page_count`` already.
    """
    kind = DocumentKind(kind)
    try:
        document: _BaseDocument
        if kind is DocumentKind.pdf:
            document = _PdfDocument(path, password)
        elif kind is DocumentKind.epub:
            document = _EpubDocument(path, limits)
        elif kind is DocumentKind.html:
            document = _HtmlDocument(path)
        else:
            document = _TextDocument(path, limits)
    except FileNotFoundError as exc:
        raise ExtractionError(ErrorCode.file_missing, f"the file is gone: {exc.filename}") from None
    if document.page_count > limits.max_pages:
        document.close()
        raise ExtractionError(
            ErrorCode.too_many_pages, f"the document has {document.page_count} pages, more than {limits.max_pages}"
        )
    return document


class _PageError(Exception):
    """A page cannot be extracted, for a reason already worded for the reader."""


class _BaseDocument:
    method = ""
    page_count = 0

    def extract(self, number: int) -> PageResult:
        if not 1 <= number <= self.page_count:
            raise ValueError(f"page {number} is not in 1..{self.page_count}")  # a caller's bug, not a bad page
        started = time.perf_counter()
        try:
            text = self._text(number)
        except (ExtractionError, MemoryError):
            raise  # a hostile archive, or a heap in any state: the whole document fails, not the page
        except _PageError as exc:
            return self._result(number, "", started, str(exc))
        except Exception as exc:  # noqa: BLE001  # any parser failure on one page must not stop the others
            return self._result(number, "", started, f"{type(exc).__name__}: {exc}")
        return self._result(number, text, started)

    def _result(self, number: int, text: str, started: float, error: str | None = None) -> PageResult:
        ms = round((time.perf_counter() - started) * 1000, 3)
        # Counted here, in the child, though it costs the child 1-2 % of its CPU on the corpus's PDFs:
        # counted in the store's writer thread instead, the server's Python work grew and B5's event-loop
        # lag p99 rose in seven pairs of runs out of seven (medians 3.6 and 4.7 ms; the GIL is shared).
        return PageResult(number, text, len(text), len(text.split()), ms, self.method, error)

    def _text(self, number: int) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- PDF


class _PdfDocument(_BaseDocument):
    method = "pdfium"

    def __init__(self, path: str | os.PathLike[str], password: str | None) -> None:
        self._pdf = _load_pdf(path, password or None)  # "" means no password, as for PDFium
        self.page_count = len(self._pdf)
        if self.page_count == 0:
            self._pdf.close()
            raise ExtractionError(ErrorCode.no_pages, "the PDF has no pages")

    def _text(self, number: int) -> str:
        # PDFium's own calls, not pypdfium2's page objects: the text is the same (all of it inside
        # the page box, as PdfTextPage.get_text_bounded gives it and the corpus manifest's floor was
        # measured), and the objects, their finalizers and their box lookups cost 6-9 % of the CPU
        # of extracting the corpus. The page and its text page are closed at once: PDFium's
        # per-page memory adds up over thousands of pages.
        page = pdfium_c.FPDF_LoadPage(self._pdf.raw, number - 1)
        if not page:
            raise _PageError("PDFium cannot load the page")
        try:
            textpage = pdfium_c.FPDFText_LoadPage(page)
            if not textpage:
                raise _PageError("PDFium cannot load the page's text")
            try:
                box = pdfium_c.FS_RECTF()
                if not pdfium_c.FPDF_GetPageBoundingBox(page, box):
                    raise _PageError("PDFium cannot find the page's box")
                return _bounded_text(textpage, (box.left, box.top, box.right, box.bottom))
            finally:
                pdfium_c.FPDFText_ClosePage(textpage)
        finally:
            pdfium_c.FPDF_ClosePage(page)

    def close(self) -> None:
        self._pdf.close()


def _bounded_text(textpage: object, edges: tuple[float, float, float, float]) -> str:
    """The text inside ``edges``, in one call to PDFium with room enough. Asking for its length
    first, as pypdfium2 does, makes PDFium build the text twice: that first call was 2.9 % of
    PDFium's time on the corpus's pages. PDFium counts a page's characters in UTF-16 units, and each
    gives at most three units of the text (itself, and a line break before it), so four a character
    is room enough. PDFium ends what it writes with a NUL when there is room for one: a full buffer
    without it was too small after all, and is made larger."""
    room = 4 * pdfium_c.FPDFText_CountChars(textpage) + 1
    if room <= 1:
        return ""
    while True:
        buffer = (ctypes.c_ushort * room)()
        written = pdfium_c.FPDFText_GetBoundedText(textpage, *edges, buffer, room)
        if written < room or buffer[room - 1] == 0:
            break
        room *= 2
    if written > 0 and buffer[written - 1] == 0:
        written -= 1
    return ctypes.string_at(buffer, 2 * written).decode("utf-16-le", "ignore")


def _load_pdf(path: str | os.PathLike[str], password: str | None) -> pdfium.PdfDocument:
    """Open a PDF, telling a missing password from a wrong one.

    PDFium reports both with the same FPDF_ERR_PASSWORD, so which one it is depends on
    whether a password was given. PDFium also does not fall back to the empty user password
    when given another one, so a document anyone may open is retried without one.
    """
    try:
        return _load_pdf_raw(path, password)
    except _PdfLoadError as exc:
        if exc.code != pdfium_c.FPDF_ERR_PASSWORD:
            raise exc.extraction_error() from None
        if password is None:
            raise ExtractionError(ErrorCode.password_required, "the PDF is encrypted and needs a password") from None
    try:
        return _load_pdf_raw(path, None)
    except _PdfLoadError:
        raise ExtractionError(ErrorCode.wrong_password, "the password does not open the PDF") from None


class _PdfLoadError(Exception):
    _REASONS: ClassVar[dict[int, str]] = {
        pdfium_c.FPDF_ERR_FILE: "the file cannot be read",
        pdfium_c.FPDF_ERR_FORMAT: "it is not a PDF or is damaged beyond repair",
        pdfium_c.FPDF_ERR_SECURITY: "its encryption scheme is not supported",
        pdfium_c.FPDF_ERR_PAGE: "its page tree is damaged",
    }

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code

    def extraction_error(self) -> ExtractionError:
        reason = self._REASONS.get(self.code, f"PDFium error {self.code}")
        return ExtractionError(ErrorCode.invalid_document, f"the PDF cannot be opened: {reason}")


def _load_pdf_raw(path: str | os.PathLike[str], password: str | None) -> pdfium.PdfDocument:
    # Not pdfium.PdfDocument(path): pypdfium2 5.x treats "loaded, but 0 pages" as a load
    # failure, leaks that handle, and reports FPDF_GetLastError() of an earlier call (even
    # "Success"). Loading the raw handle ourselves tells the cases apart and closes it.
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file", path)
    handle = pdfium_c.FPDF_LoadDocument(os.fsencode(path), None if password is None else password.encode("utf-8"))
    if not handle:
        raise _PdfLoadError(pdfium_c.FPDF_GetLastError())
    return pdfium.PdfDocument(handle)


# -- EPUB

_OPF_TYPE = "application/oebps-package+xml"
_XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class _SpineItem:
    path: str | None  # the archive entry, if the item can be read
    problem: str | None  # else why not: the page error


class _EpubDocument(_BaseDocument):
    """One page per spine item, in reading order.

    Every itemref counts, linear or not: a text extractor has no reader to skip
    ``linear="no"`` items for, and their text is part of the book. An idref listed again
    is kept once, at its first place, so the same text is not extracted twice. A spine
    item that is not XHTML is read through its manifest fallback chain, as EPUB 3 asks of
    foreign content; without an XHTML fallback it becomes a page with an error.
    """

    method = "epub"

    def __init__(self, path: str | os.PathLike[str], limits: Limits) -> None:
        self._budget = limits.epub_max_uncompressed_bytes
        self._zip = _open_zip(path, limits)
        try:
            container = self._xml("META-INF/container.xml")
            opf_path = _rootfile(container)
            self._spine = _spine(self._xml(opf_path), posixpath.dirname(opf_path))
        except BaseException:
            self._zip.close()
            raise
        self.page_count = len(self._spine)
        if not self._spine:
            self._zip.close()
            raise ExtractionError(ErrorCode.no_pages, "the EPUB's spine lists no documents")

    def _text(self, number: int) -> str:
        item = self._spine[number - 1]
        if item.path is None:
            raise _PageError(item.problem)
        try:
            data = self._read(item.path)
        except KeyError:
            raise _PageError(f"{item.path!r} is listed in the manifest but missing from the archive") from None
        return html_text(_decode_markup(data), xhtml=True)

    def _read(self, name: str) -> bytes:
        """An entry's bytes, never more than what is left of the uncompressed budget.

        The sizes in the zip directory were checked at open; counting what really comes out
        means an entry whose header lies, or one read twice, still cannot pass the limit.
        """
        chunks = []
        with self._zip.open(name) as entry:
            while chunk := entry.read(min(_CHUNK, self._budget + 1)):
                self._budget -= len(chunk)
                if self._budget < 0:
                    raise ExtractionError(
                        ErrorCode.archive_too_large, f"{name!r} decompresses past the uncompressed size limit"
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    def _xml(self, name: str) -> Element:
        """A package-level XML file, parsed with entity declarations, DTD entities and external refs refused."""
        try:
            data = self._read(name)
        except KeyError:
            raise ExtractionError(ErrorCode.invalid_document, f"the EPUB has no {name}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ExtractionError(ErrorCode.invalid_document, f"{name} cannot be decompressed: {exc}") from None
        try:
            root: Element = SafeXml.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        except (ParseError, DefusedXmlException, ValueError) as exc:
            raise ExtractionError(ErrorCode.invalid_document, f"{name} is not acceptable XML: {exc}") from None
        return root

    def close(self) -> None:
        self._zip.close()


def _open_zip(path: str | os.PathLike[str], limits: Limits) -> zipfile.ZipFile:
    """Open an EPUB's zip after checking it against the limits, before anything is decompressed."""
    with open(path, "rb") as f:
        directory = _zip_directory(f)
    if directory is None:
        raise ExtractionError(ErrorCode.invalid_document, "the EPUB is not a zip archive")
    entries, directory_size = directory
    # zipfile builds an object per entry of the central directory; refuse a huge one before that.
    if entries > limits.epub_max_entries or directory_size > limits.epub_max_entries * 1024:
        raise ExtractionError(
            ErrorCode.archive_too_large,
            f"the EPUB's zip directory lists {entries} entries in {directory_size} bytes "
            f"(limit: {limits.epub_max_entries} entries)",
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ExtractionError(ErrorCode.invalid_document, f"the EPUB is not a readable zip: {exc}") from None
    infos = archive.infolist()
    declared = sum(info.file_size for info in infos)
    if len(infos) > limits.epub_max_entries or declared > limits.epub_max_uncompressed_bytes:
        archive.close()
        raise ExtractionError(
            ErrorCode.archive_too_large,
            f"the EPUB has {len(infos)} entries of {declared} bytes uncompressed "
            f"(limits: {limits.epub_max_entries} entries, {limits.epub_max_uncompressed_bytes} bytes)",
        )
    return archive


def _zip_directory(f: BinaryIO) -> tuple[int, int] | None:
    """(entries, size of the central directory) from a zip's end record, or None if there is none."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    tail_start = max(0, size - (22 + 0xFFFF))  # the end record, then a comment of up to 64 KiB
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries, directory_size = struct.unpack_from("<HI", tail, at + 10)
    if entries == 0xFFFF or directory_size == 0xFFFFFFFF:
        # Zip64: the real figures are in the zip64 end record that the locator before points at.
        locator = at - 20
        if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
            return None
        (record_at,) = struct.unpack_from("<Q", tail, locator + 8)
        f.seek(record_at)
        record = f.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            return None
        entries, directory_size = struct.unpack_from("<QQ", record, 32)
    return entries, directory_size


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def _rootfile(container: Element) -> str:
    """The package document's path, from META-INF/container.xml."""
    for element in container.iter():
        media_type = element.get("media-type", _OPF_TYPE)  # the attribute is required, but be lenient
        if _local_name(element.tag) == "rootfile" and media_type == _OPF_TYPE:
            full_path = element.get("full-path", "")
            path = _archive_path("", full_path)
            if path is None:
                raise ExtractionError(
                    ErrorCode.invalid_document, f"the package path leaves the container: {full_path!r}"
                )
            return path
    raise ExtractionError(ErrorCode.invalid_document, "META-INF/container.xml names no package document")


def _spine(package: Element, base: str) -> list[_SpineItem]:
    """The spine of a package document, resolved to archive paths (see :class:`_EpubDocument`)."""
    manifest: dict[str, Element] = {}
    idrefs: dict[str, None] = {}  # ordered, without repeats
    for element in package.iter():
        name = _local_name(element.tag)
        if name == "item" and element.get("id"):
            manifest.setdefault(element.get("id", ""), element)
        elif name == "itemref" and element.get("idref"):
            idrefs.setdefault(element.get("idref", ""), None)

    def resolve(idref: str) -> _SpineItem:
        seen = set()
        item_id: str | None = idref
        while item_id is not None and item_id in manifest and item_id not in seen:
            seen.add(item_id)
            item = manifest[item_id]
            media_type = item.get("media-type", "").partition(";")[0].strip().lower()
            if media_type in _XHTML_TYPES:
                href = item.get("href", "")
                path = _archive_path(base, href)
                if path is None:
                    return _SpineItem(None, f"spine item {idref!r} points outside the container: {href!r}")
                return _SpineItem(path, None)
            item_id = item.get("fallback")
        if idref not in manifest:
            return _SpineItem(None, f"spine item {idref!r} is not in the manifest")
        media_type = manifest[idref].get("media-type", "")
        return _SpineItem(None, f"spine item {idref!r} is {media_type or 'untyped'}, with no XHTML fallback")

    return [resolve(idref) for idref in idrefs]


_DRIVE = re.compile(r"^[A-Za-z]:")


def _archive_path(base: str, href: str) -> str | None:
    """The archive entry an href names, relative to ``base``; None if it leaves the container.

    Absolute paths, drive letters, URLs with a scheme or host, and ``..`` past the root are
    all refused here, so no reference can name anything but an entry of this archive.
    """
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:  # "C:/x" parses as scheme "c" too
        return None
    path = unquote(parts.path)
    if not path or path.startswith("/") or "\\" in path or "\0" in path or _DRIVE.match(path):
        return None
    joined = posixpath.normpath(posixpath.join(base, path))
    if joined == ".." or joined.startswith(("../", "/")):
        return None
    return joined


# -- HTML and text

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose BOM it starts with
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_DECLARED_CHARSET = re.compile(
    rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)|<meta[^>]*?charset\s*=\s*["']?([A-Za-z0-9._:-]+)""",
    re.IGNORECASE,
)


def _bom_decode(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    return None


def _decode_text(data: bytes) -> str:
    """Plain text: a BOM's encoding, else UTF-8 (bad bytes become U+FFFD)."""
    text = _bom_decode(data)
    return data.decode("utf-8", errors="replace") if text is None else text


def _decode_markup(data: bytes) -> str:
    """HTML or XHTML: a BOM, else the encoding the document declares, else UTF-8, else Windows-1252."""
    text = _bom_decode(data)
    if text is not None:
        return text
    match = _DECLARED_CHARSET.search(data[:4096])
    if match:
        try:
            encoding = codecs.lookup((match.group(1) or match.group(2)).decode("ascii")).name
        except LookupError:
            encoding = "unknown"
        # A declaration we could read as ASCII cannot be in UTF-16/32 (those come with a BOM).
        if encoding != "unknown" and not encoding.startswith(("utf-16", "utf-32")):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("windows-1252", errors="replace")  # what browsers assume of undeclared bytes


# Elements whose content is not text a reader sees.
_SKIP = frozenset({"head", "script", "style", "template", "noscript", "title", "iframe", "object"})
# Blocks set apart by a blank line, and blocks that only start a new line.
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl", "figure", "hr"}
    | {"section", "article", "aside", "header", "footer", "main"}
)
_LINES = frozenset(
    {"address", "caption", "dd", "details", "dialog", "div", "dt", "fieldset", "figcaption", "form", "hgroup"}
    | {"legend", "li", "nav", "summary", "tr"}
)
_CELLS = frozenset({"td", "th"})
# XHTML may write <script/> or <title/>; an HTML parser would read everything after as script text.
_SELF_CLOSED_RAW = re.compile(
    r"<(script|style|title|textarea|iframe|noscript|noembed|noframes|xmp)(\s[^<>]*?)?/>", re.IGNORECASE
)
# An XML internal subset (<!DOCTYPE html [ <!ENTITY ...> ]>) is not HTML: the parser would end
# the doctype at the first ">" and show the rest as text. Its entities are never expanded anyway.
_SUBSET_START = re.compile(r"<!DOCTYPE([^>\[]*)\[", re.IGNORECASE)
_SUBSET_END = re.compile(r"\]\s*>")

# The walk writes layout as control characters (removed from the input first), so that the
# clean-up of ordinary whitespace can tell them apart: the breaks blocks ask for, which merge
# with their neighbours (the strongest wins), a <br>, and the whitespace of a <pre>, kept as is.
_LINE, _PARA, _BR = "\x03", "\x04", "\x05"
_PRE_HIDE = str.maketrans({"\n": "\x00", " ": "\x01", "\t": "\x02"})
_SHOW = str.maketrans({"\x00": "\n", "\x01": " ", "\x02": "\t", _BR: "\n"})
_CONTROLS = re.compile("[\x00-\x05]")
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
_BREAKS = re.compile(r"[ \x03\x04]*[\x03\x04][ \x03\x04]*")


def html_text(markup: str, *, xhtml: bool = False) -> str:
    """The visible text of an HTML or XHTML document, a line per block, words never run together.

    Whitespace collapses as a browser would, except inside ``<pre>``; ``<head>``, scripts and
    styles are skipped. No entity outside HTML's own is expanded and nothing is fetched.
    """
    markup = _CONTROLS.sub("", markup)
    if xhtml:
        markup = _drop_internal_subset(markup)
        markup = _SELF_CLOSED_RAW.sub(r"<\1\2></\1>", markup)
    root = LexborHTMLParser(markup).root
    if root is None:
        return ""
    out: list[str] = []
    pre_depth = 0
    # An explicit stack, not recursion: hostile documents nest elements thousands deep.
    stack: list[LexborNode | str | int] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        if isinstance(item, int):  # the end of a <pre>
            pre_depth += item
            continue
        tag = item.tag or ""
        if tag == "-text":
            text = item.text_content or ""
            out.append(text.translate(_PRE_HIDE) if pre_depth else _SPACES.sub(" ", text))
            continue
        if tag in _SKIP or tag.startswith("-"):  # comments, the doctype and other non-elements
            continue
        if tag == "br":
            out.append(_BR)
            continue
        after = _PARA if tag in _PARAGRAPHS else _LINE if tag in _LINES else "\t" if tag in _CELLS else ""
        if after and after != "\t":
            out.append(after)
        if tag == "pre":
            pre_depth += 1
            stack.append(-1)
        if after:
            stack.append(after)
        stack.extend(reversed(list(item.iter(include_text=True))))
    # Each step is linear: spaces are single before _BREAKS looks at them, so it never backtracks
    # over a long run, and line ends are trimmed line by line rather than by a regex.
    text = re.sub(r" {2,}", " ", "".join(out))  # adjacent text nodes: "Hello " + " world"
    text = _BREAKS.sub(lambda m: "\n\n" if _PARA in m.group() else "\n", text)
    text = "\n".join(line.rstrip(" \t") for line in text.translate(_SHOW).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _drop_internal_subset(markup: str) -> str:
    start = _SUBSET_START.search(markup, 0, 4096)  # the doctype comes before any content
    end = _SUBSET_END.search(markup, start.end()) if start else None
    if start is None or end is None:
        return markup
    return f"{markup[: start.start()]}<!DOCTYPE{start.group(1)}>{markup[end.end() :]}"


class _HtmlDocument(_BaseDocument):
    """An HTML file is one page; it is parsed when that page is extracted."""

    method = "html"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._data = Path(path).read_bytes()
        if not self._data.strip():
            raise ExtractionError(ErrorCode.no_pages, "the HTML file is empty")
        self.page_count = 1

    def _text(self, number: int) -> str:
        return html_text(_decode_markup(self._data))


def split_text(text: str, page_chars: int) -> list[str]:
    """Pages of a plain text: at form feeds if it has any, else chunks of about ``page_chars``.

    A chunk ends after the last line break in its second half, else after the last space
    there, else exactly at ``page_chars``. Joining the pages (with ``"\\f"`` if split at form
    feeds) gives back the text, except a final form feed's empty tail, which is dropped.
    """
    if "\f" in text:
        pages = text.split("\f")
        if len(pages) > 1 and not pages[-1].strip():
            pages.pop()  # a form feed that ends the last page does not start another
        return pages
    pages = []
    start = 0
    while start < len(text):
        end = start + page_chars
        if end < len(text):
            floor = start + page_chars // 2  # never a page much shorter than asked
            cut = text.rfind("\n", floor, end)
            if cut < 0:
                cut = text.rfind(" ", floor, end)
            if cut >= 0:
                end = cut + 1
        pages.append(text[start:end])
        start = end
    return pages


class _TextDocument(_BaseDocument):
    """Plain text and Markdown: the source text itself, split into pages at open."""

    method = "text"

    def __init__(self, path: str | os.PathLike[str], limits: Limits) -> None:
        text = _decode_text(Path(path).read_bytes())
        if not text.strip():
            raise ExtractionError(ErrorCode.no_pages, "the text is empty")
        self._pages = split_text(text, limits.text_page_chars)
        self.page_count = len(self._pages)

    def _text(self, number: int) -> str:
        return self._pages[number - 1]
