"""
The user and session as W3C ``baggage`` entries: format, signature, trust, counters.

Standard library only; the HTTP clients' hooks (:mod:`.integrations.http`) and
the web integrations (:mod:`.integrations._wsgi`, :mod:`.integrations.asgi`)
call into it.

Format: ``user.id`` and ``session.id`` (the OpenTelemetry semantic-convention
names), values percent-encoded (everything but RFC 3986 unreserved characters,
so a space is ``%20`` and a plus ``%2B``). OpenTelemetry's
``W3CBaggagePropagator`` reads the same ids, and entries it writes (a space as
``+``) are decoded the way it decodes them. With a shared
secret a third entry signs them::

    baggage: user.id=alice,session.id=s-1,context_trace.sig=v1.1765100000.<hex>

The signature is HMAC-SHA256 over ``v1``, the timestamp and the two encoded
values (empty when absent), joined by newlines (encoded values never hold one).

Trust on the receiving side (:class:`BaggageTrust`): entries are accepted from a
peer address inside an allowlisted network, or with a valid, fresh signature.
Everything else is ignored, counted (``stats()["baggage_rejected"]``) and logged
once per reason. The secret is never logged nor shown in a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote, unquote_plus

from ._log import log_once
from ._state import STATE

__all__ = [
    "ENV_BAGGAGE_SECRET",
    "MAX_BYTES",
    "MAX_MEMBERS",
    "SESSION_KEY",
    "SIG_KEY",
    "USER_KEY",
    "BaggageTrust",
    "check_secret",
    "outgoing",
]

_logger = logging.getLogger(__name__)

ENV_BAGGAGE_SECRET = "CONTEXT_TRACE_BAGGAGE_SECRET"
USER_KEY = "user.id"
SESSION_KEY = "session.id"
SIG_KEY = "context_trace.sig"
_OURS = (USER_KEY, SESSION_KEY, SIG_KEY)
#: W3C Baggage limits: list-members and bytes of the whole header.
MAX_MEMBERS = 64
MAX_BYTES = 8192
_VERSION = "v1"
_DEFAULT_MAX_AGE = 300.0


def _count(key: str) -> None:
    """Count one baggage event in the process state (``stats()`` reports them)."""
    STATE.baggage.add(key)


def _encode(value: str) -> str:
    return quote(value, safe="")


def check_secret(name: str, value: object) -> str | None:
    """Validate a secret argument: None or a non-blank str (never echoed)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


def _sign(secret: str, stamp: int, user: str, session: str) -> str:
    message = f"{_VERSION}\n{stamp}\n{user}\n{session}".encode()
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{_VERSION}.{stamp}.{digest}"


# --------------------------------------------------------------------------- parsing
def _members(header: str) -> list[str]:
    return [m.strip() for m in header.split(",") if m.strip()]


def _key(member: str) -> str:
    return member.split(";", 1)[0].split("=", 1)[0].strip()


def _value(member: str) -> str:
    pair = member.split(";", 1)[0]
    return pair.split("=", 1)[1].strip() if "=" in pair else ""


# --------------------------------------------------------------------------- sending
def outgoing(
    existing: Sequence[str],
    user_id: str | None,
    session_id: str | None,
    secret: str | None,
) -> str | None:
    """
    The ``baggage`` header to send: *existing* values with our entries merged in.

    Returns None when nothing changes: no ids, our entries already there (a
    redirect re-sends the request), the app's own ``user.id``/``session.id``
    differ (its entries win, ours are left out), or adding ours would break the
    W3C limits (counted as ``baggage_not_sent``, logged once).
    """
    if user_id is None and session_id is None:
        return None
    members = [m for value in existing for m in _members(value)]
    ours: dict[str, str] = {}
    if user_id is not None:
        ours[USER_KEY] = _encode(user_id)
    if session_id is not None:
        ours[SESSION_KEY] = _encode(session_id)
    present = {_key(m): _value(m) for m in members}
    for key, value in ours.items():
        if key in present and present[key] != value:
            return None  # the app set its own: leave the header as it is
    if all(key in present for key in ours):
        return None
    if secret is not None and SIG_KEY not in present:
        ours[SIG_KEY] = _sign(
            secret,
            int(time.time()),
            ours.get(USER_KEY, ""),
            ours.get(SESSION_KEY, ""),
        )
    added = [f"{k}={v}" for k, v in ours.items() if k not in present]
    merged = [*members, *added]
    header = ",".join(merged)
    if len(merged) > MAX_MEMBERS or len(header.encode("utf-8")) > MAX_BYTES:
        _count("baggage_not_sent")
        log_once(
            _logger,
            "baggage.limits",
            "context_trace: the user and session were not added to a request's "
            "baggage: it would exceed the W3C limits (%d entries, %d bytes)",
            MAX_MEMBERS,
            MAX_BYTES,
        )
        return None
    _count("baggage_sent")
    return header


# --------------------------------------------------------------------------- receiving
class BaggageTrust:
    """
    Which senders may set the user and session through ``baggage`` entries.

    Pass it to a web integration (``accept_baggage=BaggageTrust(...)``). An
    incoming ``user.id``/``session.id`` is accepted when the peer address the
    server reports (``REMOTE_ADDR``, the ASGI ``client``) is inside one of
    *networks*, or when the entries carry a valid ``context_trace.sig`` no older
    than *max_age*. ``X-Forwarded-For`` is never read: behind a proxy, let the
    server rewrite the peer address (uvicorn's ``--forwarded-allow-ips``,
    werkzeug's ``ProxyFix``) or use the secret.

    Args:
        networks: CIDRs (``"10.0.0.0/8"``, ``"::1/128"``) or addresses of
            trusted peers, whose entries need no signature.
        secret: The shared secret senders sign with. Default: the
            ``CONTEXT_TRACE_BAGGAGE_SECRET`` environment variable, read now.
        max_age: Seconds a signature stays valid (default 300): limits replay.

    Raises:
        ValueError: a network is not a CIDR, the secret is empty, *max_age* is
            not positive, or neither networks nor a secret are given.
        TypeError: an argument has the wrong type.

    .. versionadded:: 0.3.0
    """

    __slots__ = ("_networks", "_secret", "max_age")

    def __init__(
        self,
        networks: Iterable[str] = (),
        *,
        secret: str | None = None,
        max_age: float = _DEFAULT_MAX_AGE,
    ) -> None:
        if isinstance(networks, str):
            networks = [networks]
        parsed = []
        for network in networks:
            if not isinstance(network, str):
                raise TypeError(
                    f"networks must hold CIDR strings, got {type(network).__name__}"
                )
            try:
                parsed.append(ipaddress.ip_network(network.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"networks must hold CIDRs like '10.0.0.0/8', got {network!r}"
                ) from None
        if secret is None:
            secret = os.environ.get(ENV_BAGGAGE_SECRET) or None
            secret = check_secret(ENV_BAGGAGE_SECRET, secret)
        else:
            secret = check_secret("secret", secret)
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)):
            raise TypeError(f"max_age must be a number, got {type(max_age).__name__}")
        if math.isnan(max_age) or max_age <= 0:
            raise ValueError(f"max_age must be greater than 0, got {max_age!r}")
        if not parsed and secret is None:
            raise ValueError(
                "BaggageTrust needs networks or a secret (or "
                f"{ENV_BAGGAGE_SECRET}): it would trust no one"
            )
        self._networks = tuple(parsed)
        self._secret = secret
        self.max_age = float(max_age)

    def __repr__(self) -> str:
        secret = "'***'" if self._secret else "None"
        networks = [str(n) for n in self._networks]
        return f"BaggageTrust(networks={networks!r}, secret={secret}, max_age={self.max_age})"

    def _trusted_peer(self, peer: str | None) -> bool:
        if not self._networks or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        # A dual-stack server reports an IPv4 client as ::ffff:a.b.c.d.
        mapped = getattr(address, "ipv4_mapped", None)
        return any(
            address in network or (mapped is not None and mapped in network)
            for network in self._networks
        )

    def read(
        self, headers: Sequence[str], peer: str | None
    ) -> tuple[str | None, str | None]:
        """
        The ``(user_id, session_id)`` the request's ``baggage`` carries, if trusted.

        ``(None, None)`` when there are none, or they are rejected (counted,
        logged once per reason). Never raises.
        """
        try:
            return self._read(headers, peer)
        except Exception:  # noqa: BLE001 - bad input must never fail a request
            return self._reject("malformed", peer)

    def _read(
        self, headers: Sequence[str], peer: str | None
    ) -> tuple[str | None, str | None]:
        if not headers:
            return None, None
        raw = ",".join(headers)
        members = _members(raw)
        entries: dict[str, str] = {}
        for member in members:
            key = _key(member)
            if key in _OURS:
                if key in entries:
                    return self._reject("malformed", peer)  # a key given twice
                entries[key] = _value(member)
        if USER_KEY not in entries and SESSION_KEY not in entries:
            return None, None  # the app's own baggage: none of our business
        if len(members) > MAX_MEMBERS or len(raw.encode("utf-8")) > MAX_BYTES:
            return self._reject("too long", peer)
        encoded_user = entries.get(USER_KEY, "")
        encoded_session = entries.get(SESSION_KEY, "")
        # unquote_plus, as OpenTelemetry's propagator decodes: its senders
        # write a space as '+'. Ours never send a raw '+' (it is %2B).
        user = unquote_plus(encoded_user, errors="strict").strip() or None
        session = unquote_plus(encoded_session, errors="strict").strip() or None
        if any(v is not None and not v.isprintable() for v in (user, session)):
            return self._reject("malformed", peer)
        if not self._trusted_peer(peer):
            reason = self._check_signature(
                entries.get(SIG_KEY), encoded_user, encoded_session
            )
            if reason is not None:
                return self._reject(reason, peer)
        _count("baggage_accepted")
        return user, session

    def _check_signature(self, sig: str | None, user: str, session: str) -> str | None:
        """None when *sig* is valid for the values, else why not."""
        if self._secret is None or sig is None:
            return "untrusted peer, unsigned"
        parts = sig.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit():
            return "malformed signature"
        stamp = int(parts[1])
        expected = _sign(self._secret, stamp, user, session)
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            return "bad signature"
        if abs(time.time() - stamp) > self.max_age:
            return "expired signature"
        return None

    @staticmethod
    def _reject(reason: str, peer: str | None) -> tuple[None, None]:
        _count("baggage_rejected")
        log_once(
            _logger,
            f"baggage.rejected.{reason}",
            "context_trace: ignored the user/session baggage of a request from %s "
            "(%s); see stats()['baggage_rejected']",
            peer or "an unknown peer",
            reason,
        )
        return None, None
