#!/usr/bin/env python3
"""A SASL- and TLS-terminating front for a Kafka broker that has neither.

    broker_front.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:BROKER_PORT \
        [--tls-cert CERT.pem --tls-key KEY.pem] [--user NAME:PASSWORD ...] \
        [--mechanisms PLAIN,SCRAM-SHA-256,SCRAM-SHA-512] [--require-sasl]

The Tansu build the tests use can neither require SASL with a working login
nor speak TLS. Tests put this front between the proxy (or a client) and Tansu
to get "a broker that requires SASL" and "a broker that speaks TLS". Start
Tansu with ``--advertised-listener-url tcp://127.0.0.1:FRONT_PORT`` so that
its Metadata and FindCoordinator answers name the front, not Tansu itself.

Each client connection gets its own upstream connection. SASL is required
when at least one ``--user`` is given (or ``--require-sasl``); then, until the
client has authenticated, only these requests are accepted:

* ApiVersions: forwarded upstream, the answer relayed unchanged;
* SaslHandshake v0-v1: answered here (error 0 for an enabled mechanism,
  33 UNSUPPORTED_SASL_MECHANISM otherwise);
* SaslAuthenticate v0-v2: answered here. PLAIN checks
  ``authzid\\0authcid\\0password``; SCRAM-SHA-256/512 run the server side of
  RFC 5802 through ``scramp`` in two rounds (server-first, then server-final
  ``v=...``). A failed login is answered with 58 SASL_AUTHENTICATION_FAILED
  and the connection is closed after a short pause (--failed-auth-delay-ms),
  as Kafka does.

After a v0 SaslHandshake the SASL tokens travel as bare length-prefixed
frames without Kafka headers (the pre-KIP-152 form), as on a Kafka broker.
Any other request before authentication closes the connection. Once
authenticated (or at once when SASL is not required) bytes are relayed both
ways untouched.

Prints ``READY`` on stdout once listening; logs to stderr. Runs until SIGTERM
or SIGINT. Needs only the standard library and ``scramp`` (installed by
scripts/install-stack into the venv at $KAFKA_GUARD_PYTHON).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import ssl
import struct
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from scramp import ScramException, ScramMechanism

LOG = logging.getLogger("broker_front")

API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36

ERR_NONE = 0
ERR_UNSUPPORTED_SASL_MECHANISM = 33
ERR_ILLEGAL_SASL_STATE = 34
ERR_SASL_AUTHENTICATION_FAILED = 58

SUPPORTED_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# Kafka's sasl.server.max.receive.size: the largest frame accepted before a
# client has authenticated.
MAX_UNAUTHENTICATED_FRAME = 512 * 1024
RELAY_CHUNK = 64 * 1024


class ProtocolError(Exception):
    """The client sent something this front (like a Kafka broker) refuses;
    the connection is closed."""


# --- wire primitives --------------------------------------------------------


class Reader:
    def __init__(self, data: bytes, offset: int = 0):
        self.data = data
        self.pos = offset

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError("truncated request")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            if shift > 28:
                raise ProtocolError("varint too long")
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def nullable_string(self) -> Optional[str]:
        n = self.int16()
        if n < 0:
            return None
        return self.take(n).decode("utf-8", "replace")

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise ProtocolError("null where a string is required")
        return s

    def bytes32(self) -> bytes:
        n = self.int32()
        if n < 0:
            raise ProtocolError("null where bytes are required")
        return self.take(n)

    def compact_bytes(self) -> bytes:
        n = self.uvarint()
        if n == 0:
            raise ProtocolError("null where bytes are required")
        return self.take(n - 1)

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string16(s: Optional[str]) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def compact_string(s: Optional[str]) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


@dataclass
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: Optional[str]


def parse_header(payload: bytes, flexible: bool) -> Tuple[RequestHeader, Reader]:
    r = Reader(payload)
    api_key, api_version, correlation_id = struct.unpack(">hhi", r.take(8))
    client_id = r.nullable_string()  # never compact, even in header v2
    if flexible:
        r.tagged_fields()
    return RequestHeader(api_key, api_version, correlation_id, client_id), r


async def read_frame(reader: asyncio.StreamReader, limit: int) -> Optional[bytes]:
    """One length-prefixed frame, or None on a clean end of stream."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ProtocolError("stream ended inside a frame length")
        return None
    n = struct.unpack(">i", head)[0]
    if n < 0 or n > limit:
        raise ProtocolError("frame length %d outside 0..%d" % (n, limit))
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a %d-byte frame" % n)


# --- responses ------------------------------------------------------------


def sasl_handshake_response(correlation_id: int, error_code: int, mechanisms: List[str]) -> bytes:
    body = struct.pack(">ihi", correlation_id, error_code, len(mechanisms))
    body += b"".join(string16(m) for m in mechanisms)
    return framed(body)


def sasl_authenticate_response(correlation_id: int, version: int, error_code: int,
                               error_message: Optional[str], auth_bytes: bytes) -> bytes:
    flexible = version >= 2
    out = struct.pack(">i", correlation_id)
    if flexible:
        out += b"\x00"  # response header v1: no tagged fields
    out += struct.pack(">h", error_code)
    if flexible:
        out += compact_string(error_message) + uvarint(len(auth_bytes) + 1) + auth_bytes
    else:
        out += string16(error_message) + struct.pack(">i", len(auth_bytes)) + auth_bytes
    if version >= 1:
        out += struct.pack(">q", 0)  # session_lifetime_ms: no re-authentication
    if flexible:
        out += b"\x00"
    return framed(out)


# --- authentication ---------------------------------------------------------


class AuthFailed(Exception):
    """Wrong credentials or a broken SASL exchange; answered with error 58."""


@dataclass
class Credentials:
    passwords: Dict[str, str]
    mechanisms: List[str]
    # mechanism -> user -> (salt, stored_key, server_key, iterations)
    scram: Dict[str, Dict[str, tuple]] = field(default_factory=dict)

    def __post_init__(self):
        for mech in self.mechanisms:
            if mech.startswith("SCRAM-"):
                m = ScramMechanism(mech)
                self.scram[mech] = {u: m.make_auth_info(p) for u, p in self.passwords.items()}


class Exchange:
    """The server side of one SASL exchange."""

    def __init__(self, mechanism: str, creds: Credentials):
        self.mechanism = mechanism
        self.creds = creds
        self.user: Optional[str] = None
        self.done = False
        self.scram = None
        if mechanism.startswith("SCRAM-"):
            table = creds.scram[mechanism]

            def auth_fn(escaped: str):
                # RFC 5802 saslname: "=2C" and "=3D" stand for "," and "=".
                name = escaped.replace("=2C", ",").replace("=3D", "=")
                self.user = name
                return table.get(name)

            self.scram = ScramMechanism(mechanism).make_server(auth_fn)

    def step(self, token: bytes) -> bytes:
        """Consumes one client token; returns the server's answer. Sets
        ``done`` when the exchange completed successfully."""
        if self.done:
            raise AuthFailed("exchange already complete")
        if self.mechanism == "PLAIN":
            return self._plain(token)
        return self._scram(token)

    def _plain(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise AuthFailed("PLAIN token is not authzid NUL authcid NUL password")
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            raise AuthFailed("PLAIN token is not UTF-8")
        self.user = authcid
        if authzid and authzid != authcid:
            raise AuthFailed("authorization id %r differs from username %r" % (authzid, authcid))
        expected = self.creds.passwords.get(authcid)
        if expected is None or expected != password:
            raise AuthFailed("invalid username or password for %r" % authcid)
        self.done = True
        return b""

    def _scram(self, token: bytes) -> bytes:
        try:
            message = token.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthFailed("SCRAM message is not UTF-8")
        s = self.scram
        try:
            if s.stage is None:
                s.set_client_first(message)  # an unknown user raises here
                return s.get_server_first().encode()
            s.set_client_final(message)
            final = s.get_server_final()
        except ScramException as e:
            raise AuthFailed("SCRAM: %s" % e)
        self.done = True
        return final.encode()


# --- one connection ---------------------------------------------------------


class Connection:
    ids = itertools.count(1)

    def __init__(self, front: "Front", reader, writer):
        self.front = front
        self.cr = reader
        self.cw = writer
        self.id = next(self.ids)
        self.peer = writer.get_extra_info("peername")
        self.ur: Optional[asyncio.StreamReader] = None
        self.uw: Optional[asyncio.StreamWriter] = None
        self.mechanism: Optional[str] = None
        self.handshake_version: Optional[int] = None
        self.exchange: Optional[Exchange] = None
        self.auth_version: Optional[int] = None  # SaslAuthenticate version, None for v0 tokens

    def log(self, level, msg, *args):
        LOG.log(level, "conn %d %s: " + msg, self.id, self.peer, *args)

    async def run(self) -> None:
        try:
            try:
                self.ur, self.uw = await asyncio.open_connection(*self.front.upstream)
            except OSError as e:
                self.log(logging.WARNING, "cannot connect upstream %s:%d: %s",
                         *self.front.upstream, e)
                return
            if self.front.require_sasl:
                if not await self.authenticate():
                    return
            else:
                self.log(logging.DEBUG, "connected (no SASL required)")
            await self.relay()
        except ProtocolError as e:
            self.log(logging.WARNING, "closing: %s", e)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            self.log(logging.INFO, "closed: %s", e)
        except Exception:
            LOG.exception("conn %d %s: unexpected error", self.id, self.peer)
        finally:
            await self.close()

    async def close(self) -> None:
        for w in (self.cw, self.uw):
            if w is None:
                continue
            try:
                w.close()
            except Exception:
                pass
        for w in (self.cw, self.uw):
            if w is None:
                continue
            try:
                await asyncio.wait_for(w.wait_closed(), 2)
            except Exception:
                pass

    async def send(self, data: bytes) -> None:
        self.cw.write(data)
        await self.cw.drain()

    async def authenticate(self) -> bool:
        """Runs the pre-authentication phase; True once the client is in."""
        while True:
            payload = await read_frame(self.cr, MAX_UNAUTHENTICATED_FRAME)
            if payload is None:
                self.log(logging.DEBUG, "client left before authenticating")
                return False
            if self.handshake_version == 0 and self.exchange is not None:
                # KIP-43 v0 handshake: bare tokens, no Kafka headers.
                result = await self.bare_token(payload)
                if result is not None:
                    return result
                continue
            if len(payload) < 8:
                raise ProtocolError("request of %d bytes has no header" % len(payload))
            api_key, api_version = struct.unpack(">hh", payload[:4])
            if api_key == API_API_VERSIONS:
                await self.forward_api_versions(payload)
            elif api_key == API_SASL_HANDSHAKE:
                if not await self.handshake(payload, api_version):
                    return False
            elif api_key == API_SASL_AUTHENTICATE:
                result = await self.sasl_authenticate(payload, api_version)
                if result is not None:
                    return result
            else:
                raise ProtocolError("api_key %d v%d before authentication" % (api_key, api_version))

    async def forward_api_versions(self, payload: bytes) -> None:
        self.uw.write(framed(payload))
        await self.uw.drain()
        answer = await read_frame(self.ur, 1 << 30)
        if answer is None:
            raise ProtocolError("upstream closed instead of answering ApiVersions")
        await self.send(framed(answer))

    async def handshake(self, payload: bytes, version: int) -> bool:
        if version not in (0, 1):
            raise ProtocolError("SaslHandshake v%d is not supported" % version)
        header, r = parse_header(payload, flexible=False)
        mechanism = r.string()
        enabled = self.front.creds.mechanisms
        if self.mechanism is not None:
            return await self.refuse(
                sasl_handshake_response(header.correlation_id, ERR_ILLEGAL_SASL_STATE, enabled),
                "second SaslHandshake")
        if mechanism not in enabled:
            return await self.refuse(
                sasl_handshake_response(header.correlation_id, ERR_UNSUPPORTED_SASL_MECHANISM,
                                        enabled),
                "mechanism %r not enabled (enabled: %s)", mechanism, ",".join(enabled))
        self.mechanism = mechanism
        self.handshake_version = version
        self.exchange = Exchange(mechanism, self.front.creds)
        await self.send(sasl_handshake_response(header.correlation_id, ERR_NONE, enabled))
        self.log(logging.DEBUG, "SaslHandshake v%d %s (client_id %r)", version, mechanism,
                 header.client_id)
        return True

    async def sasl_authenticate(self, payload: bytes, version: int) -> Optional[bool]:
        """Answers one SaslAuthenticate round. Returns True when the client is
        now authenticated, False when the connection must close, None to go on."""
        if version not in (0, 1, 2):
            raise ProtocolError("SaslAuthenticate v%d is not supported" % version)
        flexible = version >= 2
        header, r = parse_header(payload, flexible=flexible)
        token = r.compact_bytes() if flexible else r.bytes32()
        if flexible:
            r.tagged_fields()
        cid = header.correlation_id
        self.auth_version = version
        if self.exchange is None or self.handshake_version != 1:
            return await self.refuse(
                sasl_authenticate_response(
                    cid, version, ERR_ILLEGAL_SASL_STATE,
                    "SaslAuthenticate without a preceding SaslHandshake v1", b""),
                "SaslAuthenticate before SaslHandshake v1")
        try:
            answer = self.exchange.step(token)
        except AuthFailed as e:
            message = ("Authentication failed during authentication due to invalid credentials "
                       "with SASL mechanism %s" % self.mechanism)
            return await self.refuse(
                sasl_authenticate_response(cid, version, ERR_SASL_AUTHENTICATION_FAILED,
                                           message, b""),
                "authentication failed (%s, user %r): %s", self.mechanism, self.exchange.user, e)
        await self.send(sasl_authenticate_response(cid, version, ERR_NONE, None, answer))
        if self.exchange.done:
            self.authenticated()
            return True
        return None

    async def bare_token(self, token: bytes) -> Optional[bool]:
        """One token of a v0 exchange; same results as sasl_authenticate. A
        failure has no error response in this form: the connection closes."""
        try:
            answer = self.exchange.step(token)
        except AuthFailed as e:
            return await self.refuse(None, "authentication failed (%s v0 tokens, user %r): %s",
                                     self.mechanism, self.exchange.user, e)
        await self.send(framed(answer))
        if self.exchange.done:
            self.authenticated()
            return True
        return None

    async def refuse(self, response: Optional[bytes], reason: str, *args) -> bool:
        """Sends the error response, then closes after a pause, as Kafka does
        (connection.failed.authentication.delay.ms): a client gets to read the
        error before it sees the connection end."""
        if response is not None:
            await self.send(response)
        self.log(logging.WARNING, reason + "; closing", *args)
        await asyncio.sleep(self.front.failed_auth_delay_s)
        return False

    def authenticated(self) -> None:
        how = ("SaslAuthenticate v%d" % self.auth_version if self.auth_version is not None
               else "SaslHandshake v0 tokens")
        self.log(logging.INFO, "authenticated User:%s with %s (%s)", self.exchange.user,
                 self.mechanism, how)

    async def relay(self) -> None:
        """Copies bytes both ways until either side closes, then closes both,
        as a Kafka broker does when its client goes away."""
        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while True:
                data = await src.read(RELAY_CHUNK)
                if not data:
                    return
                dst.write(data)
                await dst.drain()

        up = asyncio.ensure_future(pump(self.cr, self.uw))
        down = asyncio.ensure_future(pump(self.ur, self.cw))
        done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            e = t.exception()
            if e is not None:
                self.log(logging.DEBUG, "relay ended: %r", e)
        self.log(logging.DEBUG, "%s closed the connection", "client" if up in done else "upstream")


# --- server -----------------------------------------------------------------


class Front:
    def __init__(self, upstream: Tuple[str, int], creds: Credentials, require_sasl: bool,
                 failed_auth_delay_s: float = 0.1):
        self.upstream = upstream
        self.creds = creds
        self.require_sasl = require_sasl
        self.failed_auth_delay_s = failed_auth_delay_s
        self.tasks: set = set()

    async def handle(self, reader, writer) -> None:
        # asyncio keeps only weak references to stream readers, and drops its
        # reference to this task once the client's transport is lost: hold it
        # here so a connection still relaying is never garbage-collected.
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass  # shutting down; Connection.run closed both sides
        finally:
            self.tasks.discard(task)


def host_port(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % value)
    return host.strip("[]"), int(port)


def user_password(value: str) -> Tuple[str, str]:
    name, sep, password = value.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD, got %r" % value)
    return name, password


def mechanism_list(value: str) -> List[str]:
    out = [m.strip().upper() for m in value.split(",") if m.strip()]
    for m in out:
        if m not in SUPPORTED_MECHANISMS:
            raise argparse.ArgumentTypeError("unsupported mechanism %r (supported: %s)"
                                             % (m, ",".join(SUPPORTED_MECHANISMS)))
    if not out:
        raise argparse.ArgumentTypeError("no mechanisms given")
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--listen", required=True, type=host_port, help="HOST:PORT to listen on")
    p.add_argument("--upstream", required=True, type=host_port, help="broker HOST:PORT")
    p.add_argument("--tls-cert", help="PEM certificate (chain); enables TLS towards clients")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--tls-session-tickets", type=int, default=0, metavar="N",
                   help="TLS 1.3 session tickets sent after the handshake (default 0; "
                        "kafka-python 2.x tears down an idle connection that receives one)")
    p.add_argument("--user", action="append", type=user_password, default=[],
                   metavar="NAME:PASSWORD", help="a SASL user (repeatable); makes SASL required")
    p.add_argument("--mechanisms", type=mechanism_list, default=",".join(SUPPORTED_MECHANISMS),
                   help="enabled SASL mechanisms, comma-separated (default: %(default)s)")
    p.add_argument("--require-sasl", action="store_true",
                   help="require SASL even with no --user (every login then fails)")
    p.add_argument("--failed-auth-delay-ms", type=int, default=100, metavar="MS",
                   help="pause between a refused SASL step's error response and closing "
                        "the connection (Kafka's connection.failed.authentication.delay.ms; "
                        "default %(default)s)")
    p.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    a = p.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    return a


def tls_context(a) -> Optional[ssl.SSLContext]:
    if not a.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.tls_cert, a.tls_key)
    ctx.num_tickets = a.tls_session_tickets
    return ctx


async def serve(a) -> None:
    creds = Credentials(dict(a.user), a.mechanisms)
    front = Front(a.upstream, creds, require_sasl=bool(a.user) or a.require_sasl,
                  failed_auth_delay_s=a.failed_auth_delay_ms / 1000)
    server = await asyncio.start_server(front.handle, a.listen[0], a.listen[1],
                                        ssl=tls_context(a), reuse_address=True)
    addrs = ", ".join("%s:%d" % s.getsockname()[:2] for s in server.sockets)
    LOG.info("listening on %s (%s), upstream %s:%d, SASL %s", addrs,
             "TLS" if a.tls_cert else "plaintext", *a.upstream,
             ("required: %s; users: %s" % (",".join(a.mechanisms),
                                           ",".join(sorted(creds.passwords)) or "none"))
             if front.require_sasl else "not required")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()
        LOG.info("stopping")
        server.close()
        for task in list(front.tasks):
            task.cancel()
        await asyncio.gather(*front.tasks, return_exceptions=True)


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, a.log_level),
                        format="%(asctime)s broker_front %(levelname)s %(message)s")
    try:
        asyncio.run(serve(a))
    except OSError as e:
        LOG.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
