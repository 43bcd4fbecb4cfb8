"""Tests of pagestream.sniff: the kind of a document comes from its bytes, never from its name."""

from __future__ import annotations

import os
import random
import time
import zlib
from pathlib import Path

import pytest

from pagestream.jobs import DocumentKind
from pagestream.sniff import sniff

from .corpus import require_corpus
from .docs import epub_entries, make_epub, make_pdf, make_zip

HEAD = 64 * 1024


def sniff_file(tmp_path: Path, data: bytes, filename: str | None = None) -> DocumentKind | None:
    """Sniff as the server does: the first 64 KiB, the spooled file, the upload's name."""
    path = tmp_path / "upload"
    path.write_bytes(data)
    return sniff(data[:HEAD], path, filename)


def png() -> bytes:
    raw = b"\0" + b"\xff\x00\x00" * 4  # one row of four red pixels
    chunk = b"IDAT" + zlib.compress(raw)
    return b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR\0\0\0\x04\0\0\0\x01\x08\x02\0\0\0" + chunk + b"IEND"


def test_pdf(tmp_path: Path) -> None:
    assert sniff_file(tmp_path, make_pdf(["hello"])) is DocumentKind.pdf
    # PDFium finds the header anywhere in the first 1024 bytes, and without the dash too.
    assert sniff(b"\0" * 1000 + b"%PDF-1.4\n") is DocumentKind.pdf
    assert sniff(b"%PDF1.4\n%\xe2\xe3\xcf\xd3\n") is DocumentKind.pdf
    assert sniff(b"\0" * 1024 + b"%PDF-1.4\n") is None


def test_epub(tmp_path: Path) -> None:
    epub = make_epub(["one"])
    assert sniff_file(tmp_path, epub) is DocumentKind.epub
    assert sniff(epub[:HEAD]) is DocumentKind.epub  # the stored mimetype entry comes first


def test_epub_without_a_leading_mimetype(tmp_path: Path) -> None:
    entries = epub_entries(["one"])
    del entries["mimetype"]
    epub = make_zip(entries)
    assert sniff_file(tmp_path, epub) is DocumentKind.epub  # META-INF/container.xml is enough
    assert sniff(epub[:HEAD]) is None  # but only seen by opening the zip

    moved = epub_entries(["one"])
    del moved["META-INF/container.xml"]
    moved["mimetype"] = moved.pop("mimetype")  # last: only its content says EPUB
    assert sniff_file(tmp_path, make_zip(moved)) is DocumentKind.epub


@pytest.mark.parametrize(
    "entries",
    [
        {"word/document.xml": b"<w:document/>", "[Content_Types].xml": b"<Types/>"},  # a DOCX
        {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<office/>"},  # an ODT
        {"readme.txt": b"just a zip"},
    ],
)
def test_other_zips(tmp_path: Path, entries: dict[str, bytes]) -> None:
    assert sniff_file(tmp_path, make_zip(entries), "book.epub") is None


def test_broken_zip(tmp_path: Path) -> None:
    assert sniff_file(tmp_path, b"PK\x03\x04" + os.urandom(2000)) is None
    entries = epub_entries(["one"])
    del entries["mimetype"]  # so only the zip's directory could tell, and that is cut off
    assert sniff_file(tmp_path, make_zip(entries)[:-30]) is None


@pytest.mark.parametrize(
    "markup",
    [
        b"<!DOCTYPE html><title>x</title><p>hi",
        b"<!doctype HTML>\n<html lang=en>",
        b"\xef\xbb\xbf  <!-- a comment -->\n<!-- another -->\n<HTML><body>hi</body></HTML>",
        b'<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "x">\n<html>',
        b"<head><title>fragment</title></head><body>text</body>",
        b"<meta charset=utf-8>\n<body>\n<p>hello",
        "<!DOCTYPE html><p>caf\xe9</p>".encode("windows-1252"),  # not UTF-8, still HTML
        "\ufeff<html><body>utf-16</body></html>".encode("utf-16-le"),
    ],
)
def test_html(tmp_path: Path, markup: bytes) -> None:
    assert sniff_file(tmp_path, markup, "notes.txt") is DocumentKind.html


@pytest.mark.parametrize(
    "text",
    [
        "Just a letter.\n\nDear reader, this is plain prose with no markup at all.\n",
        "Shopping list - eggs, milk.\nA line with <angle> brackets and a price of $5 * 2.\n",
        "config value # not a heading\nkey = value\n",
        "-- \nA signature\n",
        "   \n\n",
    ],
)
def test_plain_text(tmp_path: Path, text: str) -> None:
    assert sniff_file(tmp_path, text.encode()) is DocumentKind.text


@pytest.mark.parametrize(
    "text",
    [
        "# A title\n\nSome text.\n",
        "Intro\n\n```python\nprint('hi')\n```\n",
        "See [the docs](https://example.com/docs) for more.\n",
        "Title\n=====\n\nBody.\n",
        "Intro line\n\n## Section\n\n- one\n- two\n",
        "Some **bold** claims:\n\n* first\n* second\n",
    ],
)
def test_markdown(tmp_path: Path, text: str) -> None:
    assert sniff_file(tmp_path, text.encode()) is DocumentKind.markdown


def test_markdown_by_name_only_when_text(tmp_path: Path) -> None:
    prose = b"Plain prose, no markup.\n"
    assert sniff_file(tmp_path, prose, "README.md") is DocumentKind.markdown
    assert sniff_file(tmp_path, prose, "notes.MARKDOWN") is DocumentKind.markdown
    assert sniff_file(tmp_path, png(), "image.md") is None


def test_a_lying_extension(tmp_path: Path) -> None:
    assert sniff_file(tmp_path, make_pdf(["x"]), "notes.txt") is DocumentKind.pdf
    assert sniff_file(tmp_path, b"just text\n", "report.pdf") is DocumentKind.text
    assert sniff_file(tmp_path, make_epub(["x"]), "archive.zip") is DocumentKind.epub
    assert sniff_file(tmp_path, png(), "book.epub") is None
    assert sniff_file(tmp_path, b"# Title\n\ntext\n", "page.html") is DocumentKind.markdown


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ("utf-16 with a BOM\n".encode("utf-16"), DocumentKind.text),
        ("utf-32 with a BOM\n".encode("utf-32"), DocumentKind.text),
        (b"\xef\xbb\xbfutf-8 with a BOM\n", DocumentKind.text),
        ("no BOM, so not text".encode("utf-16-le"), None),  # NUL bytes
        (b"latin-1 caf\xe9 is not UTF-8", None),
        (b"a NUL\0in the middle", None),
        (b"many \x01 control \x02 chars \x03 in \x04 a \x05 row", None),
        (b"tabs\tform feeds\fand CRLF\r\n are fine", DocumentKind.text),
    ],
)
def test_text_encodings(tmp_path: Path, data: bytes, kind: DocumentKind | None) -> None:
    assert sniff_file(tmp_path, data) is kind


def test_head_cut_inside_a_character(tmp_path: Path) -> None:
    text = ("\u6f22\u5b57 " * 20000).encode()  # 3-byte characters; 64 KiB falls inside one
    assert len(text) > HEAD and HEAD % 7 != 0
    assert sniff_file(tmp_path, text) is DocumentKind.text
    utf16 = ("\u6f22 text " * 10000).encode("utf-16")
    assert sniff_file(tmp_path, utf16[: HEAD - 1]) is DocumentKind.text


def test_binaries(tmp_path: Path) -> None:
    rng = random.Random(1)
    assert sniff_file(tmp_path, png()) is None
    assert sniff_file(tmp_path, b"GIF89a\x01\x00\x01\x00\x80\x00\x00") is None
    assert sniff_file(tmp_path, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00") is None
    assert sniff_file(tmp_path, b"\x7fELF\x02\x01\x01" + bytes(100)) is None
    for _ in range(20):
        assert sniff_file(tmp_path, rng.randbytes(5000)) is None
    assert sniff(b"") is None


@pytest.mark.corpus
def test_corpus() -> None:
    """Every corpus document that raw pypdfium2 opens is a PDF; every EPUB an EPUB."""
    corpus = require_corpus()
    for path in sorted((corpus / "epub").rglob("*.epub")):
        assert sniff(path.read_bytes()[:HEAD], path, path.name) is DocumentKind.epub, path
    for line in (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]:
        name, _, _, _, outcome, *_ = line.split("\t")
        if name.startswith("pdf/") and outcome != "invalid":
            path = corpus / name
            assert sniff(path.read_bytes()[:HEAD], path, path.name) is DocumentKind.pdf, name


@pytest.mark.parametrize("line", [b"[a", b"**a ", b"__a ", b"![", b"[a](", b"<!--"])
def test_hostile_head_is_sniffed_in_linear_time(line: bytes) -> None:
    # Unbounded regex repetitions once took 7-15 s on these; the server runs sniff on every upload.
    head = line * (HEAD // len(line))
    started = time.perf_counter()
    sniff(head)
    assert time.perf_counter() - started < 2
