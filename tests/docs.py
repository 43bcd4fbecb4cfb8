"""Document fixtures built in memory, so tests never depend on files they did not write.

- :func:`make_pdf` writes a real PDF by hand (Helvetica, one content stream per page, exact
  xref offsets), optionally encrypted with the standard security handler (RC4, revision 2),
  optionally with a ToUnicode map that makes its glyphs read as any text;
  :func:`raw_pypdfium2` reads a PDF's pages as pypdfium2 does, the text the server's must equal.
- :func:`make_epub` writes a valid EPUB 3; :func:`epub_entries` gives the same archive as a
  dict so a test can break one part of it and rebuild it with :func:`make_zip`.
"""

from __future__ import annotations

import hashlib
import html
import io
import struct
import zipfile
from collections.abc import Collection
from pathlib import Path

import pypdfium2 as pdfium

__all__ = ["epub_entries", "lie_about_size", "make_epub", "make_pdf", "make_zip", "opf", "raw_pypdfium2", "xhtml"]


# -- PDF


def _pdf_string(line: str) -> bytes:
    """A PDF literal string: ( ) and \\ are escaped; Helvetica with WinAnsiEncoding covers Latin-1."""
    escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def _content_stream(text: str) -> bytes:
    """Each line of ``text`` on its own line of the page, from the top left, 14 points apart."""
    ops = [b"BT", b"/F1 12 Tf", b"14 TL", b"72 740 Td"]
    for i, line in enumerate(text.split("\n")):
        if i:
            ops.append(b"T*")
        if line:
            ops.append(_pdf_string(line) + b" Tj")
    ops.append(b"ET")
    return b"\n".join(ops) + b"\n"


# The 32-byte padding string of the standard security handler (PDF 32000-1, 7.6.3.3).
_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


class _Rc4Security:
    """Revision 2 of the standard security handler: 40-bit RC4, the simplest that PDFium still opens."""

    permissions = -44  # print and copy allowed; the bits do not matter to a text extractor

    def __init__(self, user_password: str, owner_password: str, file_id: bytes) -> None:
        user = (user_password.encode("latin-1") + _PAD)[:32]
        owner = (owner_password.encode("latin-1") + _PAD)[:32]
        self.o = _rc4(hashlib.md5(owner).digest()[:5], user)
        self.key = hashlib.md5(user + self.o + struct.pack("<i", self.permissions) + file_id).digest()[:5]
        self.u = _rc4(self.key, _PAD)

    def encrypt(self, number: int, data: bytes) -> bytes:
        object_key = hashlib.md5(self.key + number.to_bytes(3, "little") + b"\0\0").digest()[:10]
        return _rc4(object_key, data)

    def dictionary(self) -> bytes:
        return b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
            self.o.hex().encode(),
            self.u.hex().encode(),
            self.permissions,
        )


def make_pdf(
    pages: list[str],
    *,
    user_password: str | None = None,
    owner_password: str | None = None,
    broken_pages: Collection[int] = (),
    to_unicode: dict[str, str] | None = None,
) -> bytes:
    """A PDF with one page per string, each line of a string on its own line of the page.

    ASCII (Latin-1 at most) only; about 50 lines fit on a page. With ``user_password`` (and
    optionally ``owner_password``) the file is RC4-encrypted; ``user_password=""`` makes a file
    that is encrypted but opens without a password. ``broken_pages`` (1-based) point their
    page-tree entry at an object that does not exist, so that page alone cannot be loaded.
    ``pages=[]`` gives a well-formed document with no pages. ``to_unicode`` gives the font a
    ToUnicode map: each of its keys, drawn as Helvetica draws it, is read as its value, which may
    be any text (characters beyond U+FFFF too).
    """
    file_id = hashlib.md5(repr(pages).encode()).digest()
    security = None
    if user_password is not None or owner_password is not None:
        user = user_password or ""
        security = _Rc4Security(user, owner_password or user, file_id)

    # Objects 1-3: catalog, page tree, font; then a page and its content stream per page; then the
    # font's ToUnicode map and the encryption dictionary, if any.
    page_numbers = [4 + 2 * i for i in range(len(pages))]
    cmap_number = 4 + 2 * len(pages)
    missing = cmap_number + 2  # a number no object has
    kids = b" ".join(b"%d 0 R" % (missing if i + 1 in broken_pages else n) for i, n in enumerate(page_numbers))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding%s >>"
        % (b" /ToUnicode %d 0 R" % cmap_number if to_unicode else b""),
    ]
    for number, text in zip(page_numbers, pages, strict=True):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (number + 1)
        )
        stream = _content_stream(text)
        if security:
            stream = security.encrypt(number + 1, stream)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    if to_unicode:
        cmap = _to_unicode_cmap(to_unicode)
        if security:
            cmap = security.encrypt(cmap_number, cmap)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(cmap), cmap))
    if security:
        objects.append(security.dictionary())

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the binary comment tells tools the file is binary
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)  # each entry exactly 20 bytes
    trailer = b"/Size %d /Root 1 0 R /ID [<%s> <%s>]" % (
        len(objects) + 1,
        file_id.hex().encode(),
        file_id.hex().encode(),
    )
    if security:
        trailer += b" /Encrypt %d 0 R" % len(objects)
    out.write(b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref))
    return out.getvalue()


def _to_unicode_cmap(mapping: dict[str, str]) -> bytes:
    """A ToUnicode CMap (PDF 32000-1, 9.10.3) for a one-byte font: each key's code to its value's UTF-16BE."""
    chars = b"\n".join(b"<%02X> <%s>" % (ord(key.encode("latin-1")), value.encode("utf-16-be").hex().upper().encode())
                        for key, value in mapping.items())
    return (b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
            b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            b"/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
            b"1 begincodespacerange\n<00> <FF>\nendcodespacerange\n"
            b"%d beginbfchar\n%s\nendbfchar\n"
            b"endcmap\nCMapName currentdict /CMapResource defineresource pop\nend\nend\n") % (len(mapping), chars)


def raw_pypdfium2(path: Path) -> list[str]:
    """Each page's text as pypdfium2's own page objects give it: what the server's text must equal."""
    document = pdfium.PdfDocument(path)
    try:
        texts = []
        for index in range(len(document)):
            page = document[index]
            textpage = page.get_textpage()
            texts.append(textpage.get_text_bounded())
            textpage.close()
            page.close()
        return texts
    finally:
        document.close()


# -- EPUB and zip


def make_zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``entries`` in order; an entry named ``mimetype`` is stored uncompressed, as OCF asks."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if name == "mimetype" else compression
            archive.writestr(info, data)
    return out.getvalue()


CONTAINER_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>
"""


def xhtml(body: str, *, title: str = "Chapter", doctype: str = "<!DOCTYPE html>") -> bytes:
    """An XHTML content document whose ``<body>`` holds ``body`` (markup, inserted as is)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"{doctype}\n"
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">\n'
        f"<head><title>{html.escape(title)}</title></head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    ).encode()


def opf(items: list[tuple[str, str, str]], spine: list[str], *, title: str = "Test") -> bytes:
    """A package document: ``items`` are (id, href, media-type) manifest entries, ``spine`` the idrefs."""
    manifest = "\n".join(
        f'    <item id="{html.escape(i)}" href="{html.escape(h)}" media-type="{html.escape(m)}"'
        + (' properties="nav"' if i == "nav" else "")
        + "/>"
        for i, h, m in items
    )
    itemrefs = "\n".join(f'    <itemref idref="{html.escape(idref)}"/>' for idref in spine)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="uid">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="uid">urn:uuid:00000000-0000-4000-8000-000000000000</dc:identifier>
    <dc:title>{html.escape(title)}</dc:title>
    <dc:language>en</dc:language>
    <meta property="dcterms:modified">2024-01-01T00:00:00Z</meta>
  </metadata>
  <manifest>
{manifest}
  </manifest>
  <spine>
{itemrefs}
  </spine>
</package>
""".encode()


def epub_entries(chapters: list[str], *, title: str = "Test") -> dict[str, bytes]:
    """The entries of :func:`make_epub`'s archive, in order, for tests that alter one of them.

    Chapter ``i`` (from 1) is ``OEBPS/chapter{i}.xhtml`` with manifest id ``c{i}``; its text is
    one ``<p>`` per line. The navigation document is in the manifest but not in the spine.
    """
    entries = {"mimetype": b"application/epub+zip", "META-INF/container.xml": CONTAINER_XML}
    items = [("nav", "nav.xhtml", "application/xhtml+xml")]
    nav_links = []
    for i, text in enumerate(chapters, start=1):
        paragraphs = "\n".join(f"<p>{html.escape(line)}</p>" for line in text.split("\n"))
        entries[f"OEBPS/chapter{i}.xhtml"] = xhtml(paragraphs, title=f"Chapter {i}")
        items.append((f"c{i}", f"chapter{i}.xhtml", "application/xhtml+xml"))
        nav_links.append(f'<li><a href="chapter{i}.xhtml">Chapter {i}</a></li>')
    nav = '<nav epub:type="toc"><ol>' + "".join(nav_links) + "</ol></nav>"
    entries["OEBPS/nav.xhtml"] = xhtml(nav, title="Contents")
    entries["OEBPS/content.opf"] = opf(items, [f"c{i}" for i in range(1, len(chapters) + 1)], title=title)
    return entries


def make_epub(chapters: list[str], *, title: str = "Test") -> bytes:
    """A valid EPUB 3 with one XHTML document per chapter, in spine order."""
    return make_zip(epub_entries(chapters, title=title))


def lie_about_size(archive: bytes, name: str, size: int) -> bytes:
    """``archive`` with the uncompressed size of entry ``name`` rewritten to ``size`` in both headers.

    The entry's data still inflates to its real size: a zip bomb whose headers lie.
    """
    data = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        local = z.getinfo(name).header_offset
    struct.pack_into("<I", data, local + 22, size)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, at + 28)
        if data[at + 46 : at + 46 + name_length] == name.encode():
            struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 46 + name_length + extra_length + comment_length)
    return bytes(data)
