"""Tests of pagestream.extraction on fixtures built by tests/docs.py, and on the shared corpus."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import pytest

from pagestream import extraction
from pagestream.extraction import ExtractionError, Limits, PageResult, html_text, open_document, split_text
from pagestream.jobs import DocumentKind, ErrorCode

from .corpus import require_corpus
from .docs import epub_entries, lie_about_size, make_epub, make_pdf, make_zip, opf, raw_pypdfium2, xhtml

XHTML = "application/xhtml+xml"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def extract_all(path: Path, kind: DocumentKind, **options: Any) -> list[PageResult]:
    with open_document(path, kind, **options) as document:
        return [document.extract(n) for n in range(1, document.page_count + 1)]


def failure(path: Path, kind: DocumentKind, **options: Any) -> ErrorCode:
    with pytest.raises(ExtractionError) as caught:
        extract_all(path, kind, **options)
    return caught.value.code


def lines(text: str) -> list[str]:
    """PDFium ends lines with \\r\\n and drops empty ones; compare the lines with text."""
    return [line for line in text.splitlines() if line.strip()]


# -- PDF


def test_pdf_pages_round_trip(tmp_path: Path) -> None:
    texts = ["The first page", "Second (page) with a \\ backslash", "line one\nline two\nline three"]
    pages = extract_all(write(tmp_path, "a.pdf", make_pdf(texts)), DocumentKind.pdf)
    assert [lines(p.text) for p in pages] == [lines(t) for t in texts]
    for number, page in enumerate(pages, start=1):
        assert page.number == number
        assert page.method == "pdfium"
        assert page.error is None
        assert page.chars == len(page.text)
        assert page.words == len(page.text.split())
        assert page.ms >= 0 and round(page.ms, 3) == page.ms


def test_pdf_text_beyond_the_basic_plane_and_expanded_glyphs_comes_whole(tmp_path: Path) -> None:
    # One glyph read as a character beyond U+FFFF (two UTF-16 units), one read as ten characters:
    # the text is read in one call with a buffer sized from PDFium's count of characters.
    mapping = {"A": "\U0001D400", "B": "abcdefghij"}
    path = write(tmp_path, "a.pdf", make_pdf(["BBBB A BB", "A A A"], to_unicode=mapping))
    texts = [p.text for p in extract_all(path, DocumentKind.pdf)]
    assert texts == raw_pypdfium2(path)
    assert texts[0].split() == ["abcdefghij" * 4, "\U0001D400", "abcdefghij" * 2]
    assert texts[1].split() == ["\U0001D400"] * 3


def test_pdf_text_longer_than_its_buffer_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No document makes more text than the room given (four UTF-16 units a character): with a count
    # that is too low, the buffer is found full and made larger until the whole text fits.
    texts = ["a page with enough text to overflow a small buffer several times over"]
    path = write(tmp_path, "a.pdf", make_pdf(texts))
    monkeypatch.setattr(extraction.pdfium_c, "FPDFText_CountChars", lambda textpage: 2)
    assert [p.text for p in extract_all(path, DocumentKind.pdf)] == texts


def test_pdf_bad_page_does_not_stop_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "a.pdf", make_pdf(["one", "two", "three"], broken_pages={2}))
    pages = extract_all(path, DocumentKind.pdf)
    assert [p.text for p in pages] == ["one", "", "three"]
    assert pages[1].error and pages[1].chars == 0 and pages[1].words == 0
    assert pages[0].error is None and pages[2].error is None


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (make_pdf([]), ErrorCode.no_pages),
        (b"%PDF-1.7\nnot really a PDF\n", ErrorCode.invalid_document),
        (b"", ErrorCode.invalid_document),
    ],
)
def test_pdf_whole_document_failures(tmp_path: Path, data: bytes, code: ErrorCode) -> None:
    assert failure(write(tmp_path, "a.pdf", data), DocumentKind.pdf) is code


def test_pdf_no_pages_after_a_failed_open(tmp_path: Path) -> None:
    # pypdfium2 reports a zero-page PDF with the error code of whatever failed before it.
    locked = write(tmp_path, "locked.pdf", make_pdf(["x"], user_password="pw"))
    assert failure(locked, DocumentKind.pdf) is ErrorCode.password_required
    assert failure(write(tmp_path, "empty.pdf", make_pdf([])), DocumentKind.pdf) is ErrorCode.no_pages


def test_too_many_pages(tmp_path: Path) -> None:
    path = write(tmp_path, "a.pdf", make_pdf(["1", "2", "3"]))
    assert failure(path, DocumentKind.pdf, limits=Limits(max_pages=2)) is ErrorCode.too_many_pages
    assert len(extract_all(path, DocumentKind.pdf, limits=Limits(max_pages=3))) == 3


@pytest.mark.parametrize(
    ("user", "owner", "password", "outcome"),
    [
        ("secret", None, None, ErrorCode.password_required),
        ("secret", None, "", ErrorCode.password_required),
        ("secret", None, "wrong", ErrorCode.wrong_password),
        ("secret", None, "secret", "ok"),
        ("secret", "boss", "boss", "ok"),  # the owner password opens it too
        ("", "boss", None, "ok"),  # encrypted, but anyone may open it
        ("", "boss", "", "ok"),
        ("", "boss", "anything", "ok"),  # PDFium alone would refuse this one
    ],
)
def test_pdf_encryption(tmp_path: Path, user: str, owner: str | None, password: str | None, outcome: object) -> None:
    path = write(tmp_path, "a.pdf", make_pdf(["hidden words"], user_password=user, owner_password=owner))
    if outcome == "ok":
        assert [p.text for p in extract_all(path, DocumentKind.pdf, password=password)] == ["hidden words"]
    else:
        assert failure(path, DocumentKind.pdf, password=password) is outcome


@pytest.mark.corpus
def test_pdf_encryption_corpus() -> None:
    encrypted = require_corpus() / "pdf" / "encrypted"
    for revision in ["r2", "r3", "r4", "r5", "r6"]:
        locked = encrypted / f"{revision}-user-password.pdf"
        assert failure(locked, DocumentKind.pdf) is ErrorCode.password_required
        assert failure(locked, DocumentKind.pdf, password="nope") is ErrorCode.wrong_password
        assert extract_all(locked, DocumentKind.pdf, password="asdfzxcv")[0].chars > 0
        if revision != "r4":  # there is no r4-empty-password.pdf
            assert extract_all(encrypted / f"{revision}-empty-password.pdf", DocumentKind.pdf)[0].chars > 0
    assert extract_all(encrypted / "r4-aes-user-password.pdf", DocumentKind.pdf, password="asdfzxcv")[0].chars > 0
    assert failure(encrypted / "cabinet-encryption_openpassword.pdf", DocumentKind.pdf) is ErrorCode.password_required


@pytest.mark.corpus
@pytest.mark.slow
def test_pdf_corpus_at_least_as_good_as_raw_pypdfium2() -> None:
    """Every PDF of the manifest: as many characters as raw pypdfium2, or the typed failure it implies."""
    corpus = require_corpus()
    with open(corpus / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f, delimiter="\t") if row["path"].startswith("pdf/")]
    assert rows
    for row in rows:
        path, outcome = corpus / row["path"], row["outcome_pypdfium2"]
        if outcome == "password":
            assert failure(path, DocumentKind.pdf) is ErrorCode.password_required, row["path"]
        elif outcome == "invalid":
            assert failure(path, DocumentKind.pdf) in {ErrorCode.invalid_document, ErrorCode.no_pages}, row["path"]
        else:
            pages = extract_all(path, DocumentKind.pdf)
            assert len(pages) == int(row["pages"]), row["path"]
            assert sum(p.chars for p in pages) >= int(row["chars_pypdfium2"]), row["path"]


# -- EPUB


def test_epub_chapters_round_trip(tmp_path: Path) -> None:
    chapters = ["Call me Ishmael.\nSome years ago.", "Chapter two & <more>", "The end"]
    pages = extract_all(write(tmp_path, "a.epub", make_epub(chapters)), DocumentKind.epub)
    assert [p.text.split("\n\n") for p in pages] == [c.split("\n") for c in chapters]
    assert {p.method for p in pages} == {"epub"}
    assert [p.number for p in pages] == [1, 2, 3]


def _epub_with_spine(tmp_path: Path, items: list[tuple[str, str, str]], spine: list[str], **extra: bytes) -> Path:
    entries = epub_entries(["one", "two"])
    entries["OEBPS/content.opf"] = opf(items, spine)
    entries.update(extra)
    return write(tmp_path, "a.epub", make_zip(entries))


def test_epub_spine_order_duplicates_and_nonlinear(tmp_path: Path) -> None:
    items = [("c1", "chapter1.xhtml", XHTML), ("c2", "chapter2.xhtml", XHTML)]
    path = _epub_with_spine(tmp_path, items, ["c2", "c1", "c2"])
    assert [p.text for p in extract_all(path, DocumentKind.epub)] == ["two", "one"]


def test_epub_bad_spine_items_are_page_errors(tmp_path: Path) -> None:
    items = [
        ("c1", "chapter1.xhtml", XHTML),
        ("gone", "missing.xhtml", XHTML),
        ("image", "cover.png", "image/png"),
        ("json", "data.json", "application/json"),  # foreign, with an XHTML fallback
        ("c2", "chapter2.xhtml", XHTML),
    ]
    entries = epub_entries(["one", "two"])
    entries["OEBPS/content.opf"] = opf(items, ["c1", "gone", "image", "nowhere", "json", "c2"]).replace(
        b'id="json"', b'fallback="c2" id="json"'
    )
    entries["OEBPS/cover.png"] = b"\x89PNG\r\n\x1a\n"
    pages = extract_all(write(tmp_path, "a.epub", make_zip(entries)), DocumentKind.epub)
    assert [p.text for p in pages] == ["one", "", "", "", "two", "two"]
    assert [p.error is not None for p in pages] == [False, True, True, True, False, False]
    assert "missing" in (pages[1].error or "")
    assert "image/png" in (pages[2].error or "")
    assert "not in the manifest" in (pages[3].error or "")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda e: e.pop("META-INF/container.xml"), ErrorCode.invalid_document),
        (lambda e: e.pop("OEBPS/content.opf"), ErrorCode.invalid_document),
        (lambda e: e.update({"OEBPS/content.opf": b"<package><unclosed"}), ErrorCode.invalid_document),
        (lambda e: e.update({"META-INF/container.xml": b"<container/>"}), ErrorCode.invalid_document),
        (lambda e: e.update({"OEBPS/content.opf": opf([("c1", "chapter1.xhtml", XHTML)], [])}), ErrorCode.no_pages),
    ],
)
def test_epub_whole_document_failures(tmp_path: Path, change: Any, code: ErrorCode) -> None:
    entries = epub_entries(["one"])
    change(entries)
    assert failure(write(tmp_path, "a.epub", make_zip(entries)), DocumentKind.epub) is code


def test_epub_not_a_zip(tmp_path: Path) -> None:
    assert failure(write(tmp_path, "a.epub", b"PK\x03\x04 and then nothing"), DocumentKind.epub) is (
        ErrorCode.invalid_document
    )


def test_epub_zip_bomb_declared_size(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.epub", make_epub(["0" * 3_000_000]))
    assert path.stat().st_size < 100_000  # it really is a bomb
    limits = Limits(epub_max_uncompressed_bytes=2_000_000)
    assert failure(path, DocumentKind.epub, limits=limits) is ErrorCode.archive_too_large
    assert len(extract_all(path, DocumentKind.epub)) == 1  # within the default limit


def test_epub_too_many_entries(tmp_path: Path) -> None:
    path = write(tmp_path, "many.epub", make_epub([f"chapter {i}" for i in range(30)]))
    assert failure(path, DocumentKind.epub, limits=Limits(epub_max_entries=20)) is ErrorCode.archive_too_large


def test_epub_lying_sizes_do_not_pass_the_limit(tmp_path: Path) -> None:
    """Headers that declare 100 bytes for a chapter that inflates to 3 MB: never more than declared comes out."""
    bomb = lie_about_size(make_epub(["0" * 3_000_000]), "OEBPS/chapter1.xhtml", 100)
    path = write(tmp_path, "liar.epub", bomb)
    limits = Limits(epub_max_uncompressed_bytes=1_000_000)
    with open_document(path, DocumentKind.epub, limits=limits) as document:
        try:
            page = document.extract(1)
        except ExtractionError as exc:
            assert exc.code is ErrorCode.archive_too_large
        else:
            assert page.error is not None and page.text == ""


def test_epub_reading_is_counted_against_the_limit(tmp_path: Path) -> None:
    # Two manifest items for one 600 kB entry: each fits the limit, reading both does not.
    items = [("a", "chapter1.xhtml", XHTML), ("b", "chapter1.xhtml", XHTML)]
    entries = epub_entries(["x" * 600_000])
    entries["OEBPS/content.opf"] = opf(items, ["a", "b"])
    path = write(tmp_path, "twice.epub", make_zip(entries))
    with open_document(path, DocumentKind.epub, limits=Limits(epub_max_uncompressed_bytes=1_000_000)) as document:
        assert document.extract(1).chars == 600_000
        with pytest.raises(ExtractionError) as caught:
            document.extract(2)
    assert caught.value.code is ErrorCode.archive_too_large


def test_epub_paths_that_leave_the_container_are_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xhtml"
    secret.write_bytes(xhtml("<p>TOP SECRET FILE</p>"))
    hrefs = [
        "../../outside.xhtml",  # from OEBPS/, one level above the root
        "%2e%2e/%2e%2e/outside.xhtml",
        "../../../../../../" + str(secret),
        str(secret),
        secret.as_uri(),
        "C:/outside.xhtml",
        "..\\..\\outside.xhtml",
    ]
    items = [("c1", "chapter1.xhtml", XHTML), ("root", "../root.xhtml", XHTML)]  # "../" within the root is fine
    items += [(f"x{i}", href, XHTML) for i, href in enumerate(hrefs)]
    zip_secret = xhtml("<p>TOP SECRET ENTRY</p>")
    # zipfile keeps these names as given; a careless reader would find them.
    entries = {"../outside.xhtml": zip_secret, "/outside.xhtml": zip_secret, "root.xhtml": xhtml("<p>at the root</p>")}
    path = _epub_with_spine(tmp_path, items, ["c1", "root"] + [f"x{i}" for i in range(len(hrefs))], **entries)
    pages = extract_all(path, DocumentKind.epub)
    assert [p.text for p in pages[:2]] == ["one", "at the root"]
    for page in pages[2:]:
        assert page.error is not None and "outside the container" in page.error and page.text == "", page
    assert not any("SECRET" in p.text for p in pages)


def test_epub_package_path_outside_the_container(tmp_path: Path) -> None:
    entries = epub_entries(["one"])
    entries["META-INF/container.xml"] = entries["META-INF/container.xml"].replace(
        b"OEBPS/content.opf", b"../content.opf"
    )
    entries["../content.opf"] = entries["OEBPS/content.opf"]
    assert failure(write(tmp_path, "a.epub", make_zip(entries)), DocumentKind.epub) is ErrorCode.invalid_document


def test_epub_external_entities_are_never_read(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("the-launch-code-1234")
    doctype = f'<!DOCTYPE html [\n<!ENTITY xxe SYSTEM "{secret_file.as_uri()}">\n]>'
    entries = epub_entries(["one", "two"])
    entries["OEBPS/chapter2.xhtml"] = xhtml("<p>before &xxe; after</p>", doctype=doctype)
    pages = extract_all(write(tmp_path, "a.epub", make_zip(entries)), DocumentKind.epub)
    assert pages[0].text == "one"
    assert "before" in pages[1].text and "after" in pages[1].text
    assert not any("launch-code" in p.text for p in pages)

    # In the package document, the entity is refused outright: the EPUB is invalid.
    entries = epub_entries(["one"])
    package = entries["OEBPS/content.opf"].replace(
        b"<package", f'<!DOCTYPE package [<!ENTITY xxe SYSTEM "{secret_file.as_uri()}">]>\n<package'.encode(), 1
    )
    entries["OEBPS/content.opf"] = package.replace(b"<dc:title>Test", b"<dc:title>&xxe;")
    assert failure(write(tmp_path, "b.epub", make_zip(entries)), DocumentKind.epub) is ErrorCode.invalid_document


BILLION_LAUGHS = """<!DOCTYPE lolz [
<!ENTITY lol "lol">
<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>"""


@pytest.mark.timeout(20)
def test_epub_billion_laughs(tmp_path: Path) -> None:
    entries = epub_entries(["one", "two"])
    entries["OEBPS/chapter2.xhtml"] = xhtml("<p>&lol9;</p>", doctype=BILLION_LAUGHS)
    pages = extract_all(write(tmp_path, "a.epub", make_zip(entries)), DocumentKind.epub)
    assert pages[0].text == "one"
    assert pages[1].chars < 100 and "lollol" not in pages[1].text

    entries = epub_entries(["one"])
    package = entries["OEBPS/content.opf"].replace(b"<package", BILLION_LAUGHS.encode() + b"\n<package", 1)
    entries["OEBPS/content.opf"] = package.replace(b"<dc:title>Test", b"<dc:title>&lol9;")
    assert failure(write(tmp_path, "b.epub", make_zip(entries)), DocumentKind.epub) is ErrorCode.invalid_document


@pytest.mark.corpus
def test_epub_corpus() -> None:
    """Every real EPUB opens, and every spine document of it gives text without a page error."""
    epubs = sorted((require_corpus() / "epub").rglob("*.epub"))
    assert len(epubs) == 20
    for path in epubs:
        pages = extract_all(path, DocumentKind.epub)
        assert pages and not [p.error for p in pages if p.error], path
        assert sum(p.chars for p in pages) > 0, path
        assert "The test fails." not in " ".join(p.text for p in pages)  # the external entity's target


# -- HTML


def test_html_one_page_of_visible_text(tmp_path: Path) -> None:
    markup = b"""<!DOCTYPE html><html><head><title>Not shown</title><style>p{color:red}</style></head>
    <body><h1>Title</h1><p>First<b>bold</b>paragraph</p><p>Second</p><script>alert("no")</script>
    <ul><li>one</li><li>two</li></ul><pre>  keep   this\n  layout</pre><div>a<br>b</div></body></html>"""
    [page] = extract_all(write(tmp_path, "a.html", markup), DocumentKind.html)
    assert page.method == "html" and page.number == 1
    assert page.text == "Title\n\nFirstboldparagraph\n\nSecond\n\none\ntwo\n\n  keep   this\n  layout\n\na\nb"


def test_html_blocks_never_run_words_together() -> None:
    assert html_text(
        "<div>one</div><div>two</div><p>three</p><table><tr><td>four</td><td>five</td></tr></table>"
    ).split() == [
        "one",
        "two",
        "three",
        "four",
        "five",
    ]


def test_html_declared_charset(tmp_path: Path) -> None:
    markup = '<html><head><meta charset="windows-1252"></head><body>caf\xe9 \u20ac</body></html>'
    [page] = extract_all(write(tmp_path, "a.html", markup.encode("windows-1252")), DocumentKind.html)
    assert page.text == "caf\xe9 \u20ac"


def test_html_empty(tmp_path: Path) -> None:
    assert failure(write(tmp_path, "a.html", b"  \n"), DocumentKind.html) is ErrorCode.no_pages


# -- Plain text and Markdown


def test_text_splits_at_form_feeds(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", b"page one\n\fpage two\n\f\fpage four\n\f")
    pages = extract_all(path, DocumentKind.text)
    assert [p.text for p in pages] == ["page one\n", "page two\n", "", "page four\n"]
    assert {p.method for p in pages} == {"text"}


def test_text_splits_by_size_at_line_ends(tmp_path: Path) -> None:
    text = "".join(f"line number {i} of the text\n" for i in range(200))
    pages = extract_all(write(tmp_path, "a.txt", text.encode()), DocumentKind.text, limits=Limits(text_page_chars=100))
    assert "".join(p.text for p in pages) == text
    assert all(50 <= p.chars <= 100 for p in pages[:-1])
    assert all(p.text.endswith("\n") for p in pages)


def test_split_text_at_spaces_then_anywhere() -> None:
    words = "word " * 100
    pages = split_text(words, 32)
    assert "".join(pages) == words and all(p.endswith(" ") for p in pages)
    solid = "x" * 100
    assert split_text(solid, 32) == ["x" * 32, "x" * 32, "x" * 32, "x" * 4]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("plain \u00e9\u6f22".encode(), "plain \u00e9\u6f22"),
        (b"\xef\xbb\xbfwith a BOM", "with a BOM"),
        ("utf-16 text".encode("utf-16"), "utf-16 text"),
        ("utf-32 text".encode("utf-32"), "utf-32 text"),
        (b"bad \xff byte", "bad \ufffd byte"),
    ],
)
def test_text_decoding(tmp_path: Path, data: bytes, expected: str) -> None:
    assert [p.text for p in extract_all(write(tmp_path, "a.txt", data), DocumentKind.text)] == [expected]


@pytest.mark.parametrize("data", [b"", b"  \n\t\n", b"\f\f"])
def test_text_without_content(tmp_path: Path, data: bytes) -> None:
    assert failure(write(tmp_path, "a.txt", data), DocumentKind.markdown) is ErrorCode.no_pages


def test_markdown_is_its_source_text(tmp_path: Path) -> None:
    source = "# Title\n\n- a [link](http://x)\n"
    pages = extract_all(write(tmp_path, "a.md", source.encode()), DocumentKind.markdown)
    assert [(p.text, p.method) for p in pages] == [(source, "text")]


# -- The API


@pytest.mark.parametrize("kind", list(DocumentKind))
def test_missing_file(tmp_path: Path, kind: DocumentKind) -> None:
    assert failure(tmp_path / "gone", kind) is ErrorCode.file_missing


def test_extraction_error_survives_the_pipe() -> None:
    error = pickle.loads(pickle.dumps(ExtractionError(ErrorCode.no_pages, "nothing here")))
    assert (error.code, error.message) == (ErrorCode.no_pages, "nothing here")
    page = PageResult(1, "t", 1, 1, 0.5, "text")
    assert pickle.loads(pickle.dumps(page)) == page


def test_page_number_out_of_range(tmp_path: Path) -> None:
    with open_document(write(tmp_path, "a.txt", b"text"), DocumentKind.text) as document:
        assert document.page_count == 1
        with pytest.raises(ValueError):
            document.extract(2)
        with pytest.raises(ValueError):
            document.extract(0)


def test_require_corpus_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from . import corpus

    monkeypatch.setattr(corpus, "CORPUS", tmp_path / "no-corpus")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        corpus.require_corpus()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        corpus.require_corpus()
    monkeypatch.setattr(corpus, "CORPUS", tmp_path)
    assert corpus.require_corpus() == tmp_path
