"""Intake: an upload streamed to the spool folder, capped in size, hashed, its type sniffed.

The body is never held whole in memory: chunks go to a spool file as they arrive (the disk
writes in a thread, so the event loop never waits on the disk), and the size limit is
checked on every chunk, so an oversized upload is refused after ``max_upload_mb`` bytes, not
after all of it. Both a raw body (``curl --data-binary``) and ``multipart/form-data`` (one job
per file part) are accepted; multipart is parsed with python-multipart's streaming parser.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import python_multipart
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from .errors import BadRequest, InsufficientStorage, TooLarge, Unavailable
from .jobs import DocumentKind, new_job_id
from .sniff import sniff

HEAD_BYTES = 64 * 1024
#: Bytes gathered in memory before they are written out (per upload).
WRITE_BATCH = 1024 * 1024
_UPLOAD_PREFIX = ".upload-"


@dataclass
class SpoolFile:
    """One upload on its way into the spool."""

    path: Path
    filename: str
    limit: int
    #: The job's id, which is also the file's name once the upload is whole (see finish).
    job_id: str
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    _hash: Any = field(default_factory=hashlib.sha256)
    _file: BinaryIO | None = None
    _pending: list[bytes] = field(default_factory=list)
    _pending_size: int = 0
    kind: DocumentKind | None = None

    @classmethod
    def create(cls, spool_dir: Path, filename: str, limit: int) -> SpoolFile:
        job_id = new_job_id()
        return cls(spool_dir / f"{_UPLOAD_PREFIX}{job_id}", clean_filename(filename), limit, job_id)

    @property
    def sha256(self) -> str:
        digest: str = self._hash.hexdigest()
        return digest

    async def write(self, chunks: list[bytes]) -> None:
        for data in chunks:
            if not data:
                continue  # an empty body makes no file (see finish)
            self.size += len(data)
            if self.size > self.limit:
                raise TooLarge(f"{self.filename} is larger than the limit of {self.limit} bytes")
            if len(self.head) < HEAD_BYTES:
                self.head += data[: HEAD_BYTES - len(self.head)]
            self._pending.append(data)
            self._pending_size += len(data)
        if self._pending_size >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        # One trip to a thread per WRITE_BATCH bytes, not per network chunk (64 KiB).
        if self._pending:
            await asyncio.to_thread(self._write, self._take_pending())

    def _take_pending(self) -> list[bytes]:
        chunks, self._pending, self._pending_size = self._pending, [], 0
        return chunks

    def _write(self, chunks: list[bytes]) -> None:
        # The chunks as they came, not joined: a join is one more copy of every byte, on the event
        # loop, which under 50 concurrent 5 MB uploads already spends its turns copying bodies.
        try:
            if self._file is None:
                self._file = open(self.path, "wb")  # noqa: SIM115 - closed in _finish() or discard()
            for chunk in chunks:
                self._hash.update(chunk)
            self._file.writelines(chunks)
        except OSError as exc:
            raise _disk_error(exc) from exc

    def _finish(self, chunks: list[bytes]) -> None:
        """Write the last ``chunks``, close the file, sniff its type (``kind``) and give the file its
        job's name (in a thread: see finish_all)."""
        if chunks:
            self._write(chunks)
        if self._file is None:
            return  # nothing was sent: no file
        try:
            self._file.close()
            self.kind = sniff(bytes(self.head), self.path, self.filename)
            whole = self.path.with_name(self.job_id)
            os.replace(self.path, whole)
        except OSError as exc:
            raise _disk_error(exc) from exc
        self.path = whole

    @staticmethod
    async def finish_all(spools: list[SpoolFile]) -> None:
        """Finish the uploads of one request in one trip to a thread, not one each: under 50
        concurrent uploaders each trip waits its turn, and a request of 50 small files made 50."""
        work = [(spool, spool._take_pending()) for spool in spools]

        def finish() -> None:
            for spool, chunks in work:
                spool._finish(chunks)

        await asyncio.to_thread(finish)

    async def discard(self) -> None:
        def remove() -> None:
            if self._file is not None:
                self._file.close()
            self.path.unlink(missing_ok=True)

        await asyncio.to_thread(remove)


def _disk_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("the disk is full; the upload was not kept")
    return Unavailable(f"the spool folder cannot be written: {exc.strerror}")


def clean_filename(name: str) -> str:
    """A display name: the last path component, without control characters, at most 255 characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:255] or "upload"


async def receive_raw(stream: AsyncIterator[bytes], spool_dir: Path, filename: str, limit: int) -> SpoolFile:
    """Spool a raw request body."""
    spool = SpoolFile.create(spool_dir, filename, limit)
    try:
        async for chunk in stream:
            await spool.write([chunk])
        await SpoolFile.finish_all([spool])
    except BaseException:
        await spool.discard()
        raise
    return spool


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    disposition: bytes = b""
    data: bytearray = field(default_factory=bytearray)
    spool: SpoolFile | None = None


class MultipartReceiver:
    """Parses ``multipart/form-data`` as it streams in: file parts go to spool files, fields to memory."""

    MAX_FIELD_BYTES = 64 * 1024

    def __init__(self, content_type: str, spool_dir: Path, limit: int, max_files: int) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("the multipart body has no boundary")
        self.spool_dir, self.limit, self.max_files = spool_dir, limit, max_files
        self.files: list[SpoolFile] = []
        self.fields: dict[str, str] = {}
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._pending: list[tuple[SpoolFile, bytes]] = []
        self._parser = python_multipart.MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        })

    async def receive(self, stream: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in stream:
                try:
                    self._parser.write(chunk)
                except FormParserError as exc:
                    raise BadRequest(f"the multipart body is malformed: {exc}") from None
                await self._flush()
            try:
                self._parser.finalize()
            except FormParserError as exc:
                raise BadRequest(f"the multipart body is malformed: {exc}") from None
            await self._flush()
            await SpoolFile.finish_all(self.files)
        except BaseException:
            await self.discard()
            raise

    async def discard(self) -> None:
        for spool in self.files:
            await spool.discard()

    async def _flush(self) -> None:
        # The parser's callbacks cannot await: they queue file data, written here.
        pending, self._pending = self._pending, []
        by_file: dict[int, tuple[SpoolFile, list[bytes]]] = {}
        for spool, data in pending:
            by_file.setdefault(id(spool), (spool, []))[1].append(data)
        for spool, chunks in by_file.values():
            await spool.write(chunks)

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._part.disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            if len(self.files) >= self.max_files:
                raise BadRequest(f"a request may carry at most {self.max_files} files")
            filename = options[b"filename"].decode("utf-8", "replace")
            self._part.spool = SpoolFile.create(self.spool_dir, filename, self.limit)
            self.files.append(self._part.spool)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.spool is not None:
            # Check the size here too: a whole request's worth of one part may arrive between flushes.
            queued = sum(len(d) for s, d in self._pending if s is part.spool)
            if part.spool.size + queued + (end - start) > self.limit:
                raise TooLarge(f"{part.spool.filename} is larger than the limit of {self.limit} bytes")
            self._pending.append((part.spool, data[start:end]))
        else:
            if len(part.data) + end - start > self.MAX_FIELD_BYTES:
                raise BadRequest(f"the form field {part.name!r} is too long")
            part.data += data[start:end]

    def _on_part_end(self) -> None:
        if self._part.spool is None and self._part.name:
            self.fields[self._part.name] = self._part.data.decode("utf-8", "replace")
