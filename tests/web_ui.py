"""Helpers for the browser tests of the bundled UI (tests/test_web.py).

:class:`UI` is one browser page on a server's UI: it collects every console error and page
error, and the test fails at the end if one was not expected. An expected one is declared
with :meth:`UI.allow`, by what it says and which URL it is about, for as long as it may
happen — never "ignore errors".
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importable without Playwright: test_web.py decides whether to skip or fail
    from playwright.sync_api import ConsoleMessage, Locator, Page

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@dataclass
class Allowance:
    """Console errors that may happen: text and URL both match (re.search)."""

    text: str
    url: str
    reason: str
    seen: int = 0


@dataclass
class UI:
    page: Page
    base_url: str
    name: str
    errors: list[str] = field(default_factory=list)
    allowed: list[Allowance] = field(default_factory=list)
    shot_taken: bool = False

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught exception: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "assert"):
            return
        url = message.location.get("url", "")
        for allowance in self.allowed:
            if re.search(allowance.text, message.text) and re.search(allowance.url, url):
                allowance.seen += 1
                return
        self.errors.append(f"console {message.type}: {message.text} ({url})")

    @contextlib.contextmanager
    def allow(self, text: str, url: str, reason: str) -> Iterator[Allowance]:
        """Let console errors matching ``text`` about ``url`` happen inside the block, and only there."""
        allowance = Allowance(text, url, reason)
        self.allowed.append(allowance)
        try:
            yield allowance
        finally:
            self.allowed.remove(allowance)

    # -- navigation and files

    def open(self, path: str = "/") -> UI:
        # The page gets the focus: keys pressed on a page that lacks it carry no user
        # activation, and a file chooser then never opens (seen after an earlier context closed).
        self.page.goto(self.base_url + path)
        self.page.bring_to_front()
        self.wait_connection("live")
        return self

    def upload(self, *files: Path) -> None:
        """Give files to the file input, as the file picker does."""
        self.page.set_input_files("#file-input", [str(f) for f in files])

    def drop(self, files: dict[str, bytes]) -> None:
        """Drop files on the page (a real DataTransfer with File objects, as a drag from the desktop makes)."""
        payload = [{"name": name, "data": base64.b64encode(data).decode()} for name, data in files.items()]
        transfer = self.page.evaluate_handle(
            """(files) => {
                const transfer = new DataTransfer();
                for (const { name, data } of files) {
                    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                    transfer.items.add(new File([bytes], name));
                }
                return transfer;
            }""",
            payload,
        )
        for event in ("dragenter", "dragover", "drop"):
            self.page.dispatch_event("body", event, {"dataTransfer": transfer})

    # -- reading the UI

    def row(self, filename: str, state: str | None = None) -> Locator:
        name = self.page.locator(".job-name", has_text=re.compile(f"^{re.escape(filename)}$"))
        return self.page.locator(f'.job[data-state="{state}"]' if state else ".job", has=name)

    def job_id(self, filename: str) -> str:
        job_id = self.row(filename).get_attribute("data-id")
        assert job_id
        return job_id

    def wait_row(self, filename: str, state: str | None = None, timeout: float = 30) -> Locator:
        """The row of ``filename``, once it is there (and in ``state``, if given)."""
        self.row(filename, state).wait_for(timeout=timeout * 1000)
        return self.row(filename)

    def progress(self, scope: Locator) -> dict[str, Any]:
        """The aria values of the first progress bar in ``scope``."""
        bar = scope.get_by_role("progressbar").first
        return {
            "now": _int(bar.get_attribute("aria-valuenow")),
            "max": _int(bar.get_attribute("aria-valuemax")),
            "text": bar.get_attribute("aria-valuetext"),
        }

    def wait_connection(self, state: str, timeout: float = 30) -> None:
        self.page.locator(f'#connection[data-state="{state}"]').wait_for(timeout=timeout * 1000)

    def wait_until(self, script: str, arg: Any = None, timeout: float = 30) -> Any:
        return self.page.wait_for_function(script, arg=arg, timeout=timeout * 1000, polling="raf").json_value()

    def shown_pages(self) -> list[int]:
        """The page numbers the job view shows, in the order shown."""
        return [
            int(n) for n in self.page.locator("#view .page").evaluate_all("(ps) => ps.map((p) => p.dataset.number)")
        ]

    # -- evidence

    def shot(self, suffix: str = "") -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{self.name}{suffix}.png"
        self.page.screenshot(path=str(path), full_page=False)
        self.shot_taken = True
        return path

    def check_console(self) -> None:
        assert not self.errors, "errors in the browser console:\n" + "\n".join(self.errors)


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


__all__ = ["CHROMIUM_ARGS", "SCREENSHOTS", "UI"]
