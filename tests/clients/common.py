"""Pieces shared by the per-client scenario modules.

Every scenario takes an :class:`Options`, talks to the cluster through one real
client library and returns a dict of details that ``scenario.py`` prints as a
single JSON line. A scenario signals failure by raising
:class:`ScenarioFailure` with a message meant for a person reading test logs.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import random
import string
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Tuple

SCENARIOS = ("admin", "compression", "consume-all", "groups", "idempotent", "metadata",
             "produce-payloads", "produce-transaction", "roundtrip")
CLIENTS = ("confluent", "kafka-python", "aiokafka")
# Scenarios only some clients implement (the others refuse them at argument parsing).
SCENARIO_CLIENTS = {
    "consume-all": ("confluent",),
    "produce-transaction": ("confluent",),
}
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")

# Group timings: Tansu takes ~23 s to finish a join with client defaults.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000

# Producing a payload file: a record is retried until this runs out (--delivery-timeout-ms).
DELIVERY_TIMEOUT_MS = 60000
# consume-all reads on this long after the expected records arrived and every partition
# was read to its end, so extra records show up.
EXTRA_READ_S = 1.0

# How long a partition must stay silent before a read is considered complete.
# Record counts are taken by reading until the partition is quiet because
# some brokers (Tansu) can report a wrong high watermark.
QUIET_S = 2.0
POLL_S = 0.5

Header = Tuple[str, bytes]


class ScenarioFailure(Exception):
    """A scenario did not observe what it expected."""


@dataclass(frozen=True)
class Options:
    client: str
    bootstrap: str
    scenario: str
    topic_prefix: str = "scenario"
    security_protocol: str = "PLAINTEXT"
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    sasl_mechanism: Optional[str] = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[str] = None
    oauth_token_endpoint: Optional[str] = None
    oauth_client_id: Optional[str] = None
    oauth_client_secret: Optional[str] = None
    oauth_scope: Optional[str] = None
    timeout_s: float = 60.0
    run_id: str = ""
    # produce-payloads / produce-transaction
    payloads: Optional[str] = None
    delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS
    pause_after: Optional[int] = None
    pause_file: Optional[str] = None
    transactional_id: Optional[str] = None
    commit: bool = True
    # consume-all
    read_topic: Optional[str] = None
    expect: int = 0
    isolation: str = "read_committed"

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def topic(self, label: str) -> str:
        return f"{self.topic_prefix}-{self.scenario}-{label}-{self.run_id}"

    def group(self, label: str) -> str:
        return f"{self.topic_prefix}-{self.scenario}-{label}-{self.run_id}-group"


def new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(random.SystemRandom().choice(alphabet) for _ in range(10))


# --- records -------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Tuple[Header, ...] = ()

    def describe(self) -> str:
        return "key=%s value=%s headers=%s" % (
            _short(self.key), _short(self.value),
            "[" + ", ".join("%s=%s" % (k, _short(v)) for k, v in self.headers) + "]",
        )


def _short(b: Optional[bytes], limit: int = 40) -> str:
    if b is None:
        return "null"
    r = repr(b)
    return r if len(r) <= limit else "%s...(%d bytes)" % (r[:limit], len(b))


def normalize_headers(headers: Optional[Iterable]) -> Tuple[Header, ...]:
    """Client libraries return None, [] or () for "no headers"."""
    if not headers:
        return ()
    return tuple((str(k), None if v is None else bytes(v)) for k, v in headers)


def mixed_records(count: int = 20) -> list:
    """Records that exercise the awkward corners of the record format.

    Includes a null key, an empty key, an empty value, a null value
    (tombstone), binary keys and values, a large compressible value, records without headers, an empty header
    value and repeated header keys whose order must survive.
    """
    records = []
    for i in range(count):
        key: Optional[bytes] = b"key-%d" % i
        value: Optional[bytes] = b"value-%d-" % i + bytes((i * 31 + j) % 256 for j in range(32))
        headers: Tuple[Header, ...] = (
            ("trace", b"trace-first-%d" % i),
            ("trace", b"trace-second-%d" % i),
            ("seq", str(i).encode()),
        )
        if i == 0:
            key = None
        elif i == 1:
            value = b""
        elif i == 2:
            key = b""
            value = bytes(range(256))
        elif i == 3:
            key = b"\x00\xff\x00binary\x01"
            headers = (("trace", b"\x00\x01\x02"), ("span", b""), ("trace", b"\xff"))
        elif i == 4:
            value = b"compressible-payload;" * 500
        elif i == 5:
            headers = ()
        elif i == 6:
            headers = (("a", b"1"), ("b", b"2"), ("a", b"3"), ("b", b"4"), ("a", b"5"))
        elif i == 7:
            value = None  # tombstone
        records.append(Record(key, value, headers))
    return records


def numbered_records(first: int, last: int, prefix: str = "record") -> list:
    return [
        Record(b"%s-key-%d" % (prefix.encode(), i), b"%s-%d" % (prefix.encode(), i),
               (("seq", str(i).encode()),))
        for i in range(first, last + 1)
    ]


def assert_same_records(expected: Sequence[Record], got: Sequence[Record], what: str) -> None:
    for i, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            raise ScenarioFailure(
                "%s: record %d differs\n  expected: %s\n  received: %s"
                % (what, i, e.describe(), g.describe()))
    if len(expected) != len(got):
        extra = got[len(expected):]
        raise ScenarioFailure(
            "%s: expected %d records, received %d%s" % (
                what, len(expected), len(got),
                ("; first unexpected: " + extra[0].describe()) if extra else ""))


# --- timing --------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def sub(self, seconds: float) -> "Deadline":
        d = Deadline(0)
        d.start = time.monotonic()
        d.end = min(self.end, d.start + seconds)
        return d


def wait_until(check: Callable[[], bool], deadline: Deadline, what: str,
               interval: float = 0.25) -> float:
    """Polls ``check`` until it returns true; returns the seconds it took."""
    start = time.monotonic()
    last_error: Optional[BaseException] = None
    while True:
        try:
            if check():
                return time.monotonic() - start
            last_error = None
        except ScenarioFailure:
            raise
        except Exception as e:  # client errors while the cluster settles
            last_error = e
        if deadline.expired():
            suffix = " (last error: %r)" % last_error if last_error else ""
            raise ScenarioFailure("timed out after %.1fs waiting for %s%s"
                                  % (time.monotonic() - start, what, suffix))
        time.sleep(min(interval, max(0.01, deadline.remaining())))


class QuietReader:
    """Collects records until ``expected`` arrived and the source went quiet.

    Feed it each poll's records with :meth:`add`; :meth:`done` says when to
    stop. Reading on for a quiet period after the expected count catches
    duplicates and extras.
    """

    def __init__(self, expected: int, deadline: Deadline, what: str, quiet_s: float = QUIET_S):
        self.expected = expected
        self.deadline = deadline
        self.what = what
        self.quiet_s = quiet_s
        self.records: list = []
        self.last_change = time.monotonic()

    def add(self, records: Iterable[Record]) -> None:
        before = len(self.records)
        self.records.extend(records)
        if len(self.records) != before:
            self.last_change = time.monotonic()

    def done(self) -> bool:
        if len(self.records) >= self.expected and time.monotonic() - self.last_change >= self.quiet_s:
            return True
        if self.deadline.expired():
            if len(self.records) >= self.expected:
                return True
            raise ScenarioFailure("%s: received %d of %d records before the deadline"
                                  % (self.what, len(self.records), self.expected))
        return False

    def finished(self, until_quiet: bool) -> bool:
        """Whether to stop reading: once quiet after ``expected`` records if ``until_quiet``,
        else as soon as ``expected`` arrived. Fails at the deadline."""
        if until_quiet:
            return self.done()
        if len(self.records) >= self.expected:
            return True
        if self.deadline.expired():
            raise ScenarioFailure("%s: read %d of %d records before the deadline"
                                  % (self.what, len(self.records), self.expected))
        return False

    def wanted(self, until_quiet: bool) -> Optional[int]:
        """How many more records one poll may return (``None``: any number)."""
        return None if until_quiet else self.expected - len(self.records)


# --- payload files (produce-payloads, produce-transaction) ----------------


@dataclass(frozen=True)
class Payload:
    """One record of a payload file; ``headers`` may repeat keys and hold None values."""
    partition: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Tuple[Tuple[str, Optional[bytes]], ...]


@dataclass(frozen=True)
class Payloads:
    topic: str
    compression: str
    idempotent: bool
    max_in_flight: int
    linger_ms: int
    records: Tuple[Payload, ...]


def _unb64(v, where: str) -> Optional[bytes]:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ScenarioFailure("%s: expected base64 text or null, got %r" % (where, v))
    try:
        return base64.b64decode(v.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise ScenarioFailure("%s: not base64: %s" % (where, e))


def load_payloads(path: str) -> Payloads:
    """Reads a payload file:

    {"topic": "t", "compression": "none|gzip|snappy|lz4|zstd", "idempotent": true,
     "max_in_flight": 5, "linger_ms": 5,
     "records": [{"partition": 0, "key": b64|null, "value": b64|null,
                  "headers": [["k", b64|null], ...]}, ...]}
    """
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise ScenarioFailure("reading payload file %s failed: %s" % (path, e))
    if not isinstance(doc, dict) or not isinstance(doc.get("topic"), str) or not doc["topic"]:
        raise ScenarioFailure("payload file %s: needs an object with a \"topic\"" % path)
    compression = doc.get("compression") or "none"
    if compression not in COMPRESSIONS:
        raise ScenarioFailure("payload file %s: compression %r is not one of %s"
                              % (path, compression, ", ".join(COMPRESSIONS)))
    records = []
    for i, r in enumerate(doc.get("records") or []):
        where = "payload file %s, record %d" % (path, i)
        if not isinstance(r, dict):
            raise ScenarioFailure("%s: not an object" % where)
        partition = r.get("partition", 0)
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            raise ScenarioFailure("%s: partition must be a number >= 0, not %r" % (where, partition))
        headers = []
        for h in r.get("headers") or []:
            if not isinstance(h, list) or len(h) != 2 or not isinstance(h[0], str):
                raise ScenarioFailure("%s: a header must be [\"key\", base64|null], not %r" % (where, h))
            headers.append((h[0], _unb64(h[1], where + " header " + h[0])))
        records.append(Payload(partition, _unb64(r.get("key"), where + " key"),
                               _unb64(r.get("value"), where + " value"), tuple(headers)))
    try:
        return Payloads(topic=doc["topic"], compression=compression,
                        idempotent=bool(doc.get("idempotent", True)),
                        max_in_flight=int(doc.get("max_in_flight", 5)),
                        linger_ms=int(doc.get("linger_ms", 5)), records=tuple(records))
    except (TypeError, ValueError) as e:
        raise ScenarioFailure("payload file %s: %s" % (path, e))


class Outcomes:
    """Delivered or failed, once per record index; the first report for a record counts."""

    def __init__(self, count: int):
        self.errors: list = [None] * count  # None: no report yet; "": delivered; text: failed
        self.repeated = 0

    def delivered(self, index: int) -> None:
        self._set(index, "")

    def failed(self, index: int, error: str) -> None:
        self._set(index, error or "failed without an error text")

    def _set(self, index: int, outcome: str) -> None:
        if self.errors[index] is None:
            self.errors[index] = outcome
        else:
            self.repeated += 1

    def reported(self, index: int) -> bool:
        return self.errors[index] is not None

    def pending(self) -> list:
        return [i for i, e in enumerate(self.errors) if e is None]

    def failures(self) -> list:
        return [{"index": i, "error": e} for i, e in enumerate(self.errors) if e]

    def result(self) -> dict:
        out = {"delivered": sum(1 for e in self.errors if e == ""), "failed": self.failures()}
        if self.repeated:
            out["repeated_reports"] = self.repeated
        return out


def exception_text(e: BaseException) -> str:
    """The Kafka error name and code of a kafka-python/aiokafka exception, and its text:
    "INVALID_RECORD (87): [Error 87] InvalidRecordError: <broker message>"."""
    name = getattr(e, "message", None)
    code = getattr(e, "errno", None)
    prefix = []
    if isinstance(name, str) and name and name.replace("_", "").isupper():
        prefix.append(name)
    if isinstance(code, int):
        prefix.append("(%d)" % code)
    text = str(e)
    if type(e).__name__ not in text:
        text = "%s: %s" % (type(e).__name__, text) if text else type(e).__name__
    return "%s: %s" % (" ".join(prefix), text) if prefix else text


def pause_due(opts: Options, index: int) -> bool:
    """Whether to pause (flush, then wait for --pause-file) before producing record ``index``;
    ``index`` == the record count means after the last one."""
    return opts.pause_after is not None and opts.pause_file is not None and index == opts.pause_after


def wait_for_pause_file(opts: Options, deadline: Deadline) -> float:
    """Waits until --pause-file exists; returns the seconds waited."""
    started = time.monotonic()
    while not os.path.exists(opts.pause_file):
        if deadline.expired():
            raise ScenarioFailure("paused after %d records: %s did not appear before the deadline"
                                  % (opts.pause_after, opts.pause_file))
        time.sleep(0.1)
    return time.monotonic() - started


# --- consume-all -----------------------------------------------------------


def b64(v: Optional[bytes]) -> Optional[str]:
    return None if v is None else base64.b64encode(bytes(v)).decode("ascii")


def consumed_entry(partition: int, offset: int, key, value, headers, timestamp) -> dict:
    return {
        "partition": int(partition),
        "offset": int(offset),
        "key": b64(key),
        "value": b64(value),
        "headers": [[str(k), b64(v)] for k, v in (headers or ())],
        "timestamp": int(timestamp) if timestamp is not None else None,
    }


class DrainReader:
    """Decides when consume-all is done: ``expect`` records read, every partition read to its
    end, and EXTRA_READ_S more without anything new; or the deadline passed."""

    def __init__(self, expect: int, partitions: Iterable[int], deadline: Deadline):
        self.expect = expect
        self.partitions = set(partitions)
        self.deadline = deadline
        self.count = 0
        self.at_end: set = set()
        self.settled_at: Optional[float] = None
        self.timed_out = False

    def record(self, partition: int) -> None:
        self.count += 1
        self.at_end.discard(partition)
        self.settled_at = None

    def end_of(self, partition: int) -> None:
        self.at_end.add(partition)

    def done(self) -> bool:
        if self.count >= self.expect and self.at_end >= self.partitions:
            now = time.monotonic()
            if self.settled_at is None:
                self.settled_at = now
            if now - self.settled_at >= EXTRA_READ_S:
                return True
        else:
            self.settled_at = None
        if self.deadline.expired():
            self.timed_out = True
            return True
        return False

    def result(self, entries: list) -> dict:
        entries = sorted(entries, key=lambda e: (e["partition"], e["offset"]))
        out = {"records": entries, "expected": self.expect, "complete": len(entries) >= self.expect,
               "partitions": sorted(self.partitions)}
        if self.timed_out:
            out["timed_out"] = True
        return out


# --- OAUTHBEARER ----------------------------------------------------------


def fetch_oauth_token(opts: Options) -> Tuple[str, float]:
    """client_credentials grant against ``--oauth-token-endpoint``.

    Returns the access token and its absolute expiry (epoch seconds).
    """
    if not opts.oauth_token_endpoint:
        raise ScenarioFailure("OAUTHBEARER needs --oauth-token-endpoint")
    form = {"grant_type": "client_credentials"}
    if opts.oauth_scope:
        form["scope"] = opts.oauth_scope
    req = urllib.request.Request(
        opts.oauth_token_endpoint,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    if opts.oauth_client_id:
        creds = "%s:%s" % (opts.oauth_client_id, opts.oauth_client_secret or "")
        req.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.loads(resp.read().decode())
    token = body.get("access_token")
    if not token:
        raise ScenarioFailure("token endpoint answered without access_token: %r" % body)
    return token, time.time() + float(body.get("expires_in", 300))


def jwt_claims(token: str) -> dict:
    """Claims of a JWT, unverified (only used to name the principal)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload.encode()))
    except Exception:
        return {}


# --- output --------------------------------------------------------------


def broker_entry(node_id, host, port) -> dict:
    return {"id": int(node_id), "host": str(host), "port": int(port)}


# --- client log capture ----------------------------------------------------


class RecentLog(logging.Handler):
    """Keeps the last warnings/errors the client libraries logged, so a
    failure can say what the client saw (authentication errors, TLS errors,
    disconnects) without flooding stderr on success."""

    def __init__(self, capacity: int = 10):
        super().__init__(logging.WARNING)
        self.lines: collections.deque = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        line = ("%s %s: %s" % (record.levelname, record.name, message))[:500]
        if line not in self.lines:
            self.lines.append(line)


RECENT_LOG = RecentLog()


def capture_client_logs(names: Sequence[str], verbose: bool) -> None:
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(RECENT_LOG)
        if not verbose:
            logger.propagate = False
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
