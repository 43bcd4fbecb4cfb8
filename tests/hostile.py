"""A generated set of hostile uploads, each with the outcome the server must give it.

Every case is built from a seed (``HOSTILE_SEED``, random when unset, always printed by the
tests), so a run that finds something can be repeated, and a new seed is a hostile set the
suite has never seen. The bytes are built lazily (:meth:`Case.build`): a few cases are large
(a 10,000-page PDF, bombs that inflate to a gigabyte) and only the test that submits them
should pay for them.

An outcome is ``"completed"``, ``"failed:<code>"`` (the job failed with that code) or
``"http:<status>:<code>"`` (refused at intake). A case lists every outcome it may
legitimately have: one when the outcome is knowable (a zip bomb is ``archive_too_large``,
nothing else), several for mutated files whose damage is random (a bit flip may hit a
comment, or the page tree). Whatever the case, the server must keep serving, and no case may
end ``failed:internal`` or ``failed:file_missing`` — those are the server's failures, not
the document's.

The PDFs are written by hand (:func:`pdf_file`) so that each hostile property is exactly the
one asked for: a MediaBox of 200,000 points, a FlateDecode stream of 1 GiB, 10,000 pages.
"""

from __future__ import annotations

import io
import random
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .docs import CONTAINER_XML, epub_entries, lie_about_size, make_epub, make_pdf, make_zip, opf, xhtml

__all__ = ["DOCUMENT_FAILURES", "Case", "HostileSet", "hostile_cases", "pdf_file"]

#: Codes a document (not the server) may fail with; a hostile file that fails must fail with one.
DOCUMENT_FAILURES = frozenset({
    "password_required", "wrong_password", "invalid_document", "no_pages", "too_many_pages", "archive_too_large",
    "page_timeout", "job_timeout", "memory_limit", "child_crashed",
})
_DAMAGED_PDF = frozenset({"completed"} | {f"failed:{c}" for c in DOCUMENT_FAILURES})

GIB = 1 << 30


@dataclass
class Case:
    """One hostile upload: how to build it, how to send it, and the outcomes it may end with."""

    name: str
    build: Callable[[], bytes]
    expect: frozenset[str]
    #: The upload's file name (``?filename=``, or the multipart part's name).
    filename: str = "upload"
    #: The Content-Type sent with it (a hint the server must not believe).
    content_type: str = "application/octet-stream"
    #: Sent as a multipart part rather than a raw body.
    multipart: bool = False
    #: Pages a completed job must have, when knowable.
    pages: int | None = None
    #: Strings that must never appear in the job's result or events (secrets an entity points at).
    secrets: tuple[str, ...] = ()
    #: The kind the server must sniff, when it accepts the file.
    kind: str | None = None
    #: Text that must be in the result of a completed job (proof the right parser read it).
    contains: str | None = None
    #: A completed job must have at least one page with an error (and no page the whole job failed on).
    page_errors: bool = False
    notes: str = ""
    _data: bytes | None = field(default=None, repr=False)

    def data(self) -> bytes:
        if self._data is None:
            self._data = self.build()
        return self._data

    def release(self) -> None:
        self._data = None


# -- a hand-written PDF


def pdf_file(objects: list[bytes], *, root: int = 1, trailer_extra: bytes = b"") -> bytes:
    """A PDF whose object ``i`` (from 1) is ``objects[i - 1]`` (the body between ``obj`` and ``endobj``)."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number)
        out.write(body)
        out.write(b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root %d 0 R %s>>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, root, trailer_extra, xref))
    return out.getvalue()


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), extra, data)


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def many_pages_pdf(count: int, fanout: int = 100) -> bytes:
    """``count`` pages in a two-level page tree, each with its own one-line content stream.

    Objects: 1 catalog, 2 root Pages, 3 font, then the intermediate Pages nodes, then a page
    and its content per page. Written with joins, not per-object writes: 10,000 pages take
    about 50 ms.
    """
    groups = (count + fanout - 1) // fanout
    first_group = 4
    first_page = first_group + groups
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", _FONT]
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % (first_group + g) for g in range(groups)), count)
    for g in range(groups):
        members = range(g * fanout, min(count, (g + 1) * fanout))
        kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in members)
        objects.append(b"<< /Type /Pages /Parent 2 0 R /Kids [%s] /Count %d >>" % (kids, len(members)))
    for i in range(count):
        page_object = first_page + 2 * i
        objects.append(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (first_group + i // fanout, page_object + 1))
        objects.append(_stream(b"BT /F1 12 Tf 72 720 Td (page %d of %d) Tj ET" % (i + 1, count)))
    return pdf_file(objects)


def one_page_pdf(content: bytes, *, media_box: bytes = b"0 0 612 792", filters: bytes = b"",
                 page_extra: bytes = b"") -> bytes:
    """A one-page PDF whose page content stream is ``content`` (already encoded for ``filters``)."""
    return pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        _FONT,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [%s] /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R %s>>"
        % (media_box, page_extra),
        _stream(content, filters),
    ])


def deflate_run(byte: bytes, total: int) -> bytes:
    """Raw deflate of ``total`` copies of ``byte``, made in milliseconds rather than seconds.

    After a full flush the compressor's state is fresh again, so every 1 MiB block of the run
    compresses to the same bytes: compress one, repeat it, finish with the remainder.
    """
    block = byte * (1 << 20)
    count, rest = divmod(total, len(block))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    return repeated * count + compressor.compress(block[:rest]) + compressor.flush(zlib.Z_FINISH)


def zlib_run(byte: bytes, total: int) -> bytes:
    """The zlib stream (FlateDecode) of ``total`` copies of ``byte``; its Adler-32 in closed form."""
    prime, value = 65521, byte[0]
    a = (1 + value * total) % prime
    b = (total + value * total * (total + 1) // 2) % prime
    return b"\x78\xda" + deflate_run(byte, total) + struct.pack(">I", (b << 16) | a)


def crc32_run(byte: bytes, total: int) -> int:
    block = byte * (1 << 20)
    count, rest = divmod(total, len(block))
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[:rest], crc)


def flate_bomb_pdf(inflated: int = GIB) -> bytes:
    """One page whose content stream is FlateDecode of ``inflated`` bytes of spaces (about 1 MB on disk)."""
    return one_page_pdf(zlib_run(b" ", inflated), filters=b"/Filter /FlateDecode ")


def huge_page_pdf(side: int, text_ops: int) -> bytes:
    """One page ``side`` x ``side`` points (with /UserUnit 75 too, so 75 times that in inches), and a
    content stream of ``text_ops`` text-showing operators spread over it, compressed."""
    ops = [b"BT /F1 9 Tf"]
    line = b"(" + b"hostile " * 16 + b") Tj"
    step = max(1, side // 1000)
    for i in range(text_ops):
        ops.append(b"1 0 0 1 %d %d Tm %s" % ((i * 37) % side, (i * step) % side, line))
    ops.append(b"ET")
    content = zlib.compress(b"\n".join(ops), 6)
    return one_page_pdf(content, media_box=b"0 0 %d %d" % (side, side), filters=b"/Filter /FlateDecode ",
                        page_extra=b"/UserUnit 75 ")


def nested_arrays_pdf(depth: int) -> bytes:
    """A page whose Resources hold an array nested ``depth`` deep (parser recursion)."""
    nested = b"[" * depth + b"]" * depth
    return pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        _FONT,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> /X %s >> "
        b"/Contents 5 0 R >>" % nested,
        _stream(b"BT /F1 12 Tf 72 720 Td (deep) Tj ET"),
    ])


def cyclic_page_tree_pdf() -> bytes:
    """A page tree whose node lists itself (and its parent) as kids, with a /Count that lies."""
    return pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [2 0 R 4 0 R 6 0 R] /Count 2000000000 >>",
        _FONT,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 5 0 R >>",
        _stream(b"BT /F1 12 Tf 72 720 Td (cycle) Tj ET"),
        b"<< /Type /Pages /Parent 2 0 R /Kids [6 0 R 2 0 R] /Count 7 >>",
    ])


# -- mutations


def bit_flipped(data: bytes, rng: random.Random, flips: int) -> bytes:
    out = bytearray(data)
    for _ in range(flips):
        at = rng.randrange(len(out))
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


# -- EPUBs


def epub_with_chapter(body_xhtml: bytes, *, extra: dict[str, bytes] | None = None) -> bytes:
    entries = epub_entries(["placeholder"])
    entries["OEBPS/chapter1.xhtml"] = body_xhtml
    entries.update(extra or {})
    return make_zip(entries)


def epub_with_container(container: bytes) -> bytes:
    return make_zip({**epub_entries(["harmless"]), "META-INF/container.xml": container})


def epub_with_package_doc(package: bytes) -> bytes:
    entries = epub_entries(["harmless"])
    entries["OEBPS/content.opf"] = package
    return make_zip(entries)


def xxe_chapter(system_id: str) -> bytes:
    doctype = (f'<!DOCTYPE html [\n  <!ENTITY xxe SYSTEM "{system_id}">\n'
               f'  <!ENTITY % pe SYSTEM "{system_id}">\n  %pe;\n]>')
    return xhtml("<p>before &xxe; after</p>", doctype=doctype)


def xxe_package(system_id: str) -> bytes:
    return opf([("c1", "chapter1.xhtml", "application/xhtml+xml")], ["c1"], title="&xxe;").replace(
        b'<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE package [<!ENTITY xxe SYSTEM "{system_id}">]>\n'.encode(),
    )


def xxe_container(system_id: str) -> bytes:
    return CONTAINER_XML.replace(
        b'<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE container [<!ENTITY xxe SYSTEM "{system_id}">]>\n'
        .encode(),
    ).replace(b"OEBPS/content.opf", b"OEBPS/content.opf&xxe;")


def laughs_doctype(levels: int = 10, fanout: int = 10) -> str:
    lines = ['<!ENTITY lol0 "lol">']
    for i in range(1, levels):
        lines.append(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * fanout}">')
    return "[\n" + "\n".join(lines) + "\n]"


def laughs_chapter() -> bytes:
    return xhtml("<p>&lol9;</p>", doctype=f"<!DOCTYPE html {laughs_doctype()}>")


def laughs_package() -> bytes:
    return opf([("c1", "chapter1.xhtml", "application/xhtml+xml")], ["c1"], title="&lol9;").replace(
        b'<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE package {laughs_doctype()}>\n'.encode(),
    )


def quadratic_package() -> bytes:
    """One entity of 100 kB referenced 10,000 times (no nesting: the 'quadratic blowup')."""
    body = "A" * 100_000
    return opf([("c1", "chapter1.xhtml", "application/xhtml+xml")], ["c1"], title="&a;" * 10_000).replace(
        b'<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE package [<!ENTITY a "{body}">]>\n'.encode(),
    )


def zip_bomb_epub(inflated: int = GIB, *, lie: bool) -> bytes:
    """An EPUB whose only chapter inflates to ``inflated`` bytes of spaces (1 GiB: about 1 MB).

    With ``lie`` both of its headers say it inflates to 100 bytes.
    """
    entries = epub_entries(["bomb"])
    del entries["OEBPS/chapter1.xhtml"]
    archive = _append_raw_deflated(make_zip(entries), "OEBPS/chapter1.xhtml", deflate_run(b" ", inflated),
                                   crc32_run(b" ", inflated), inflated)
    return lie_about_size(archive, "OEBPS/chapter1.xhtml", 100) if lie else archive


def _append_raw_deflated(archive: bytes, name: str, raw: bytes, crc: int, size: int) -> bytes:
    """``archive`` with one more entry whose data is the raw deflate stream ``raw``.

    zipfile cannot write an entry from already-compressed data (and compressing a gigabyte
    would take seconds), so the entry is spliced in by hand: local header and data after the
    last entry, a central directory entry after the others, a new end record.
    """
    end = archive.rfind(b"PK\x05\x06")
    entries, directory_size, directory_offset = struct.unpack_from("<HII", archive, end + 10)
    body = archive[:directory_offset]
    directory = archive[directory_offset : directory_offset + directory_size]
    encoded = name.encode()
    size32 = min(size, 0xFFFFFFFF)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(raw), size32, len(encoded), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(raw), size32,
                          len(encoded), 0, 0, 0, 0, 0, len(body))
    body += local + encoded + raw
    directory += central + encoded
    end_record = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries + 1, entries + 1, len(directory), len(body), 0)
    return body + directory + end_record


def many_entries_epub(entries: int) -> bytes:
    base = epub_entries(["many"])
    for i in range(entries):
        base[f"OEBPS/x/{i}"] = b""
    return make_zip(base, compression=zipfile.ZIP_STORED)


def traversal_epub(token: str) -> bytes:
    """Entries named with ``../`` and absolute paths, and a spine that points at them and beyond."""
    entries = epub_entries(["inside the container"])
    evil = xhtml(f"<p>escaped {token}</p>")
    entries[f"../../../tmp/pagestream-evil-{token}.xhtml"] = evil
    entries[f"/tmp/pagestream-evil-abs-{token}.xhtml"] = evil
    entries[f"OEBPS/../../pagestream-evil-up-{token}.xhtml"] = evil
    items = [
        ("c1", "chapter1.xhtml", "application/xhtml+xml"),
        ("up", f"../../../tmp/pagestream-evil-{token}.xhtml", "application/xhtml+xml"),
        ("abs", f"/tmp/pagestream-evil-abs-{token}.xhtml", "application/xhtml+xml"),
        ("url", f"file:///tmp/pagestream-evil-abs-{token}.xhtml", "application/xhtml+xml"),
        ("win", f"C:\\pagestream-evil-{token}.xhtml", "application/xhtml+xml"),
    ]
    entries["OEBPS/content.opf"] = opf(items, [i for i, _, _ in items])
    return make_zip(entries)


def container_escape_epub() -> bytes:
    return epub_with_container(CONTAINER_XML.replace(b"OEBPS/content.opf", b"../../../etc/passwd"))


def _nested_divs(depth: int) -> bytes:
    return b"<!doctype html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth


def fat_directory_zip(entries: int, name_length: int) -> bytes:
    """A zip (not an EPUB by its first entry) whose central directory is large: what the server's
    sniffer opens in its own process. Entries are empty; their names are long."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("first.bin", b"\0" * 16)
        for i in range(entries):
            archive.writestr(f"{i:08d}" + "n" * name_length, b"")
        archive.writestr("META-INF/container.xml", CONTAINER_XML)
    return out.getvalue()


# -- the set


@dataclass
class HostileSet:
    """The cases of one seed, and the secret the external-entity cases point at.

    The secret file is not written here (building the set happens at collection): whoever
    submits the cases writes :attr:`secret_text` to :attr:`secret_path` first, so that a parser
    that did resolve an entity would find something to leak.
    """

    seed: int
    cases: list[Case]
    secret_path: Path
    secret_text: str
    #: Names of files a traversal case would create if an entry name were used as a path.
    escape_names: tuple[str, ...]


_PASSWD = ("root:x:0:0", "root:*:0:0", "/usr/sbin/nologin", "/bin/false")


def hostile_cases(seed: int, corpus: Path | None, secret_dir: Path | None = None) -> HostileSet:
    """Every hostile case for ``seed``; with ``corpus``, also mutations of its PDFs."""
    rng = random.Random(seed)
    token = f"{rng.getrandbits(64):016x}"
    secret_path = (secret_dir or Path(tempfile.gettempdir())) / f"pagestream-hostile-secret-{token}.txt"
    secret_text = f"TOP-SECRET-{token}"
    leaks = (secret_text, *_PASSWD)
    cases: list[Case] = []
    add = cases.append
    damaged = _DAMAGED_PDF | {"http:415:unsupported_type"}  # a flip may hit the %PDF signature

    pages = [f"hostile seed {seed} page {i}\n" + "words " * rng.randint(5, 50) for i in range(1, rng.randint(4, 9))]
    base_pdf = make_pdf(pages)

    # Truncated and bit-flipped PDFs: the damage lands at random, so any document failure may follow.
    for i in range(4):
        keep = rng.randint(10, len(base_pdf) - 40)
        add(Case(f"pdf-truncated-{i}-at-{keep}", lambda keep=keep: base_pdf[:keep], _DAMAGED_PDF,
                 filename="cut.pdf", content_type="application/pdf", kind="pdf"))
    add(Case("pdf-header-only", lambda: b"%PDF-1.7\n", frozenset({"failed:invalid_document"}), filename="header.pdf",
             kind="pdf"))
    for i, flips in enumerate((1, 8, 64, 512)):
        flip_seed = rng.getrandbits(32)
        add(Case(f"pdf-bitflip-{i}-{flips}-flips",
                 lambda s=flip_seed, n=flips: bit_flipped(base_pdf, random.Random(s), n), damaged,
                 filename="flipped.pdf"))
    if corpus is not None:
        sources = sorted(p for p in (corpus / "pdf").rglob("*.pdf") if p.stat().st_size > 4096)
        for i in range(6):
            source = rng.choice(sources)
            mutation_seed = rng.getrandbits(32)
            if i % 2 == 0:
                def build(source: Path = source, s: int = mutation_seed) -> bytes:
                    data = source.read_bytes()
                    return data[: random.Random(s).randint(1100, len(data) - 1)]
            else:
                def build(source: Path = source, s: int = mutation_seed) -> bytes:
                    flips_rng = random.Random(s)
                    return bit_flipped(source.read_bytes(), flips_rng, flips_rng.choice([1, 16, 256]))
            label = "truncated" if i % 2 == 0 else "bitflip"
            add(Case(f"corpus-{label}-{i}-{source.stem}", build, damaged, filename=source.name,
                     notes=str(source.relative_to(corpus))))

    # Size: many pages, an enormous page, a decompression bomb, deep nesting, a cyclic page tree.
    add(Case("pdf-10000-pages", lambda: many_pages_pdf(10_000), frozenset({"completed"}), filename="long.pdf",
             pages=10_000, kind="pdf", contains="page 10000 of 10000"))
    add(Case("pdf-enormous-page-2000-ops", lambda: huge_page_pdf(200_000, 2_000), frozenset({"completed"}),
             filename="huge.pdf", pages=1, kind="pdf", contains="hostile hostile",
             notes="MediaBox 200000 x 200000 points with UserUnit 75; 260,000 characters of text"))
    # PDFium aborts when an allocation fails under the child's RLIMIT_AS (SIGABRT): child_crashed.
    add(Case("pdf-enormous-page-40000-ops", lambda: huge_page_pdf(200_000, 40_000),
             frozenset({"failed:child_crashed", "failed:memory_limit"}), filename="huger.pdf", kind="pdf",
             notes="5 million characters on one page: PDFium needs ~800 MB for its text page"))
    add(Case("pdf-flate-bomb-1gib", lambda: flate_bomb_pdf(GIB),
             frozenset({"failed:child_crashed", "failed:memory_limit"}), filename="bomb.pdf", kind="pdf",
             notes="a 1 MB content stream that inflates to 1 GiB"))
    add(Case("pdf-nested-arrays-100k", lambda: nested_arrays_pdf(100_000), frozenset({"completed"}),
             filename="deep.pdf", pages=1, kind="pdf", contains="deep",
             notes="PDFium stops parsing nested objects at a fixed depth; the page's text is unharmed"))
    add(Case("pdf-cyclic-page-tree", cyclic_page_tree_pdf,
             frozenset({"completed", "failed:invalid_document", "failed:no_pages"}), filename="cycle.pdf", kind="pdf"))
    add(Case("html-with-pdf-signature", lambda: b"<!doctype html><p>%PDF-1.7 in a page of HTML</p>" * 3,
             frozenset({"failed:invalid_document"}), filename="poly.html", content_type="text/html", kind="pdf",
             notes="'%PDF' in the first 1024 bytes makes it a PDF, as for PDFium; it is not one"))

    # EPUB archives: bombs, entry counts, a chapter that inflates past the child's memory.
    add(Case("epub-zip-bomb-1gib-honest-headers", lambda: zip_bomb_epub(GIB, lie=False),
             frozenset({"failed:archive_too_large"}), filename="bomb.epub", kind="epub"))
    add(Case("epub-zip-bomb-1gib-lying-headers", lambda: zip_bomb_epub(GIB, lie=True),
             frozenset({"completed", "failed:archive_too_large"}), filename="liar.epub", kind="epub", pages=1,
             page_errors=True, notes="zipfile stops at the declared 100 bytes and the CRC fails: a page error"))
    add(Case("epub-20000-entries", lambda: many_entries_epub(20_000), frozenset({"failed:archive_too_large"}),
             filename="many.epub", kind="epub"))
    add(Case("epub-chapter-inflates-to-400mib", lambda: zip_bomb_epub(400 << 20, lie=False),
             frozenset({"failed:memory_limit"}), filename="fat.epub", kind="epub",
             notes="under the 512 MiB archive limit, over the child's 512 MiB of memory once read and joined"))
    # External entities, XInclude, billion laughs: nothing is fetched, nothing expands.
    for label, system_id in (("passwd", "file:///etc/passwd"), ("secret-uri", secret_path.as_uri()),
                             ("secret-path", str(secret_path))):
        add(Case(f"epub-xxe-chapter-{label}", lambda s=system_id: epub_with_chapter(xxe_chapter(s)),
                 frozenset({"completed"}), filename="xxe.epub", pages=1, kind="epub", secrets=leaks,
                 contains="before"))
        add(Case(f"epub-xxe-package-{label}", lambda s=system_id: epub_with_package_doc(xxe_package(s)),
                 frozenset({"failed:invalid_document"}), filename="xxe.epub", kind="epub", secrets=leaks))
        add(Case(f"epub-xxe-container-{label}",
                 lambda s=system_id: epub_with_container(xxe_container(s)),
                 frozenset({"failed:invalid_document"}), filename="xxe.epub", kind="epub", secrets=leaks))
    uri = secret_path.as_uri()
    add(Case("epub-xinclude-iframe-object-img", lambda: epub_with_chapter(xhtml(
        f'<p>visible</p><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{uri}" parse="text"/>'
        f'<iframe src="{uri}"></iframe><object data="{uri}"></object><img src="{uri}"/>'
        f'<link rel="stylesheet" href="{uri}"/>')),
        frozenset({"completed"}), filename="xinclude.epub", pages=1, kind="epub", secrets=leaks, contains="visible"))
    add(Case("epub-billion-laughs-chapter", lambda: epub_with_chapter(laughs_chapter()), frozenset({"completed"}),
             filename="laughs.epub", pages=1, kind="epub"))
    add(Case("epub-billion-laughs-package", lambda: epub_with_package_doc(laughs_package()),
             frozenset({"failed:invalid_document"}), filename="laughs.epub", kind="epub"))
    add(Case("epub-quadratic-blowup-package", lambda: epub_with_package_doc(quadratic_package()),
             frozenset({"failed:invalid_document"}), filename="quadratic.epub", kind="epub"))

    # Entry names and hrefs with ../ and absolute paths.
    add(Case("epub-traversal-entries-and-hrefs", lambda: traversal_epub(token), frozenset({"completed"}),
             filename="traversal.epub", pages=5, kind="epub", secrets=(f"escaped {token}",),
             contains="inside the container", page_errors=True,
             notes="spine items 2-5 leave the container: each is a page with an error"))
    add(Case("epub-package-path-leaves-container", container_escape_epub, frozenset({"failed:invalid_document"}),
             filename="escape.epub", kind="epub", secrets=_PASSWD))
    add(Case("multipart-filename-with-traversal", lambda: b"a text with a hostile file name\n",
             frozenset({"completed"}), filename=f"../../../../tmp/pagestream-evil-name-{token}.txt",
             content_type="text/plain", multipart=True, pages=1, kind="text", contains="hostile file name"))

    # Names and Content-Types that lie: the bytes decide.
    a_pdf = make_pdf([f"a pdf that says it is text {token}"])
    an_epub = make_epub([f"an epub that says it is a pdf {token}"])
    add(Case("pdf-named-txt-sent-as-text", lambda: a_pdf, frozenset({"completed"}), filename="notes.txt",
             content_type="text/plain", pages=1, kind="pdf", contains="a pdf that says it is text"))
    add(Case("epub-named-pdf-sent-as-pdf", lambda: an_epub, frozenset({"completed"}), filename="paper.pdf",
             content_type="application/pdf", multipart=True, pages=1, kind="epub",
             contains="an epub that says it is a pdf"))
    add(Case("text-named-pdf-sent-as-pdf", lambda: b"just words, not a PDF at all\n" * 20, frozenset({"completed"}),
             filename="report.pdf", content_type="application/pdf", pages=1, kind="text", contains="just words"))
    add(Case("html-named-md-sent-as-markdown", lambda: b"<!doctype html><title>t</title><p>markup, not markdown</p>",
             frozenset({"completed"}), filename="readme.md", content_type="text/markdown", pages=1, kind="html",
             contains="markup, not markdown"))
    elf = b"\x7fELF\x02\x01\x01" + rng.randbytes(4000)
    add(Case("elf-named-pdf-sent-as-pdf", lambda: elf, frozenset({"http:415:unsupported_type"}),
             filename="invoice.pdf", content_type="application/pdf"))
    png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(2000)
    add(Case("png-named-epub-sent-as-epub", lambda: png, frozenset({"http:415:unsupported_type"}),
             filename="book.epub", content_type="application/epub+zip", multipart=True))
    add(Case("plain-zip-named-epub", lambda: make_zip({"a.txt": b"not an epub"}),
             frozenset({"http:415:unsupported_type"}), filename="book.epub", content_type="application/epub+zip"))

    # Text and HTML that go after the parsers and the sniffer (which runs in the server).
    add(Case("html-nested-5000-divs", lambda: _nested_divs(5_000), frozenset({"completed"}), filename="deep.html",
             pages=1, kind="html", contains="deep"))
    # Lexbor's tree building is quadratic in the nesting depth (20,000 divs: 3 s; 40,000: 23 s):
    # 1.2 MB of HTML outlasts any page timeout, and the timeout is what stops it.
    add(Case("html-nested-100000-divs", lambda: _nested_divs(100_000), frozenset({"failed:page_timeout"}),
             filename="deeper.html", kind="html", notes="the child's page timeout must stop it"))
    add(Case("text-50000-form-feeds", lambda: b"x" + b"\f" * 50_000, frozenset({"failed:too_many_pages"}),
             filename="ff.txt", kind="text"))
    add(Case("text-sniffer-backtracking", lambda: (b"[a" * 20_000 + b"\n" + b"**a" * 10_000 + b"\n" + b"<!--" * 5000),
             frozenset({"completed"}), filename="brackets.txt", contains="[a[a"))
    return HostileSet(seed, cases, secret_path, secret_text,
                      (f"pagestream-evil-{token}.xhtml", f"pagestream-evil-abs-{token}.xhtml",
                       f"pagestream-evil-up-{token}.xhtml", f"pagestream-evil-name-{token}.txt"))
