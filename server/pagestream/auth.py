"""Who is calling: API keys, their owners and roles, and the browser's session cookie.

Keys are optional. Without any, the server trusts its callers (and so only listens on
loopback unless told otherwise); every caller sees every job. With keys, every API call
names a key — ``Authorization: Bearer <key>``, ``X-API-Key: <key>``, or the session cookie a
browser gets by signing in once — and a ``user`` sees only the jobs of its owner, an
``admin`` sees all.

The session cookie is stateless, so every replica of the API accepts it: it holds the key's
fingerprint, an expiry, and an HMAC of both made with the key itself. Removing a key from
the configuration therefore ends its sessions too. Keys are compared in constant time
(``hmac.compare_digest`` on their SHA-256), and never logged or echoed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .errors import Forbidden, Unauthorized

SESSION_COOKIE = "pagestream_session"


class Role(StrEnum):
    #: Sees and acts on the jobs of its own owner only.
    user = "user"
    #: Sees and acts on every job.
    admin = "admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller: an owner name and a role. ``ANONYMOUS`` when keys are off."""

    owner: str
    role: Role
    via_cookie: bool = False

    @property
    def scope(self) -> str | None:
        """The owner whose jobs this caller may see; None means every job."""
        return None if self.role is Role.admin else self.owner


ANONYMOUS = Caller("", Role.admin)


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    fingerprint: str
    secret: bytes
    owner: str
    role: Role


class Keys:
    """The configured API keys. Empty means authentication is off."""

    def __init__(self, entries: list[tuple[str, str, Role]]) -> None:
        self._keys: list[_Key] = []
        for key, owner, role in entries:
            if len(key) < 16:
                raise ValueError(f"the key of owner {owner!r} is shorter than 16 characters")
            digest = hashlib.sha256(key.encode()).digest()
            self._keys.append(_Key(digest, digest[:12].hex(), key.encode(), owner, role))

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @classmethod
    def load(cls, inline: str, path: str) -> Keys:
        """Keys from ``KEY:OWNER[:ROLE]`` items (comma or newline separated), inline and/or in a file."""
        text = inline.replace(",", "\n")
        if path:
            text += "\n" + Path(path).read_text()
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise ValueError(f"API key entry {number} is not KEY:OWNER or KEY:OWNER:ROLE")
            try:
                role = Role(parts[2]) if len(parts) == 3 else Role.user
            except ValueError:
                raise ValueError(f"API key entry {number}: the role must be user or admin") from None
            entries.append((parts[0], parts[1], role))
        return cls(entries)

    def check(self, presented: str) -> Caller | None:
        """The caller a key belongs to, or None. Every configured key is compared, in constant time."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self._keys:
            if hmac.compare_digest(key.digest, digest):
                found = key
        return None if found is None else Caller(found.owner, found.role)

    def session_for(self, presented: str, lifetime: float) -> str:
        """A cookie value for a key that :meth:`check` accepted."""
        digest = hashlib.sha256(presented.encode()).digest()
        key = next(k for k in self._keys if hmac.compare_digest(k.digest, digest))
        payload = f"{key.fingerprint}.{int(time.time() + lifetime)}"
        return f"{payload}.{_mac(key.secret, payload)}"

    def from_session(self, cookie: str) -> Caller | None:
        fingerprint, _, rest = cookie.partition(".")
        expiry, _, mac = rest.partition(".")
        if not expiry.isdigit() or int(expiry) < time.time():
            return None
        for key in self._keys:
            if hmac.compare_digest(key.fingerprint, fingerprint):
                if hmac.compare_digest(_mac(key.secret, f"{fingerprint}.{expiry}"), mac):
                    return Caller(key.owner, key.role, via_cookie=True)
        return None


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authenticate(keys: Keys, headers: dict[str, str], cookies: dict[str, str], method: str, host: str) -> Caller:
    """The caller of a request, or 401/403. ``headers`` are lower-cased names."""
    if not keys.enabled:
        return ANONYMOUS
    presented = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if presented is None and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip()
    if presented is not None:
        caller = keys.check(presented)
        if caller is None:
            raise Unauthorized("the API key is not valid")
        return caller
    cookie = cookies.get(SESSION_COOKIE)
    if cookie:
        caller = keys.from_session(cookie)
        if caller is None:
            raise Unauthorized("the session has expired or its key was removed; sign in again")
        if method not in ("GET", "HEAD", "OPTIONS"):
            # A cookie rides along on requests other sites make the browser send: a state change
            # must come from a page of this server.
            origin = headers.get("origin")
            if origin is None or origin.split("://", 1)[-1] != host:
                raise Forbidden("a request signed in with a cookie must come from this server's own pages")
        return caller
    raise Unauthorized("this server needs an API key: send Authorization: Bearer <key>, or sign in")


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
