"""Scenarios driven through kafka-python 3.x (pure Python protocol implementation)."""

from __future__ import annotations

import logging
import time
from typing import Optional

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, for_code
from kafka.net.sasl.oauth import AbstractTokenProvider
from kafka.protocol.metadata import FindCoordinatorRequest
from kafka.structs import OffsetAndMetadata

from common import (
    COMPRESSIONS, HEARTBEAT_INTERVAL_MS, POLL_S, SESSION_TIMEOUT_MS, Deadline, Options, Outcomes,
    QuietReader, Record, ScenarioFailure, assert_same_records, broker_entry, exception_text,
    fetch_oauth_token, load_payloads, mixed_records, normalize_headers, numbered_records,
    pause_due, wait_for_pause_file, wait_until,
)

logging.getLogger("kafka").addHandler(logging.NullHandler())


class TokenProvider(AbstractTokenProvider):
    def __init__(self, opts: Options):
        self.opts = opts
        self._token: Optional[str] = None
        self._expires = 0.0

    def token(self):
        if self._token is None or time.time() > self._expires - 30:
            self._token, self._expires = fetch_oauth_token(self.opts)
        return self._token


def client_conf(opts: Options) -> dict:
    conf = {
        "bootstrap_servers": opts.bootstrap,
        "client_id": "scenario-%s" % opts.scenario,
        "security_protocol": opts.security_protocol,
        # kafka-python 3 retries a failed bootstrap (a refused SASL login
        # included) until this runs out; the 30 s default makes a negative
        # test slow, and 15 s is ample on a loaded two-core machine.
        "bootstrap_timeout_ms": 15000,
    }
    if opts.uses_ssl:
        conf["ssl_check_hostname"] = True
        if opts.ca_file:
            conf["ssl_cafile"] = opts.ca_file
        if opts.cert_file:
            conf["ssl_certfile"] = opts.cert_file
            conf["ssl_keyfile"] = opts.key_file
    if opts.uses_sasl:
        conf["sasl_mechanism"] = opts.sasl_mechanism
        if opts.sasl_mechanism == "OAUTHBEARER":
            conf["sasl_oauth_token_provider"] = TokenProvider(opts)
        else:
            conf["sasl_plain_username"] = opts.sasl_username
            conf["sasl_plain_password"] = opts.sasl_password
    return conf


def _wrap(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except KafkaError as e:
        raise ScenarioFailure("%s failed: %s: %s" % (what, type(e).__name__, e))


def admin_client(opts: Options) -> KafkaAdminClient:
    return _wrap("connecting admin client", KafkaAdminClient, request_timeout_ms=15000,
                 **client_conf(opts))


def producer(opts: Options, **extra) -> KafkaProducer:
    conf = dict(client_conf(opts), linger_ms=50, acks="all", request_timeout_ms=15000)
    conf.update(extra)
    return _wrap("connecting producer", KafkaProducer, **conf)


def consumer(opts: Options, group: Optional[str], **extra) -> KafkaConsumer:
    conf = dict(
        client_conf(opts),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        request_timeout_ms=15000,
    )
    conf.update(extra)
    return _wrap("connecting consumer", KafkaConsumer, **conf)


# --- helpers -------------------------------------------------------------


def check_topic_errors(result: dict, what: str) -> None:
    """create_topics()/delete_topics() return the response as a dict whose
    "topics" entries carry a per-topic error code. (They also raise on errors
    by default; this catches anything that slipped through.)"""
    for entry in result.get("topics") or []:
        code = entry.get("error_code", 0)
        if code != 0:
            raise ScenarioFailure("%s %s: %s %s" % (what, entry.get("name"),
                                                    for_code(code).__name__,
                                                    entry.get("error_message") or ""))


def topic_partitions(admin: KafkaAdminClient, topic: str) -> Optional[int]:
    for t in admin.describe_topics([topic]):
        if t.get("name") == topic and t.get("error_code", 0) == 0:
            return len(t.get("partitions") or [])
    return None


def create_topic(admin: KafkaAdminClient, topic: str, partitions: int, deadline: Deadline) -> float:
    started = time.monotonic()
    response = _wrap("create topic %s" % topic, admin.create_topics,
                     {topic: {"num_partitions": partitions, "replication_factor": 1}},
                     timeout_ms=10000)
    check_topic_errors(response, "create topic")
    wait_until(lambda: topic_partitions(admin, topic) == partitions, deadline,
               "topic %s with %d partitions in metadata" % (topic, partitions))
    return time.monotonic() - started


def produce(p: KafkaProducer, topic: str, records, deadline: Deadline, partition: int = 0,
            hint: str = "") -> None:
    futures = [p.send(topic, key=r.key, value=r.value, headers=list(r.headers), partition=partition)
               for r in records]
    p.flush(timeout=max(1.0, deadline.remaining()))
    for i, f in enumerate(futures):
        try:
            f.get(timeout=max(0.1, deadline.remaining()))
        except KafkaError as e:
            raise ScenarioFailure("delivery of record %d to %s failed: %s: %s%s"
                                  % (i, topic, type(e).__name__, e, hint))


def to_record(msg) -> Record:
    return Record(msg.key, msg.value, normalize_headers(msg.headers))


def read_partitions(opts: Options, topics, expected: int, deadline: Deadline,
                    partition: int = 0) -> dict:
    """Reads one partition of each topic from the beginning, without group
    membership, until ``expected`` records arrived in total and the topics
    went quiet. Returns {topic: [Record]}."""
    c = consumer(opts, None)
    try:
        tps = [TopicPartition(t, partition) for t in topics]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out = {t: [] for t in topics}
        reader = QuietReader(expected, deadline, "reading %s" % ", ".join(topics))
        while not reader.done():
            batches = c.poll(timeout_ms=int(POLL_S * 1000))
            for tp, records in batches.items():
                out[tp.topic].extend(to_record(m) for m in records)
                reader.add([tp.topic] * len(records))
        return out
    finally:
        c.close(autocommit=False)


def read_partition(opts: Options, topic: str, expected: int, deadline: Deadline) -> list:
    return read_partitions(opts, [topic], expected, deadline)[topic]


# --- scenarios -----------------------------------------------------------


def scenario_admin(opts: Options, deadline: Deadline) -> dict:
    admin = admin_client(opts)
    try:
        topic = opts.topic("t")
        created_s = create_topic(admin, topic, 3, deadline)
        if topic not in admin.list_topics():
            raise ScenarioFailure("topic %s missing from list_topics()" % topic)
        check_topic_errors(_wrap("delete topic %s" % topic, admin.delete_topics, [topic],
                                 timeout_ms=10000), "delete topic")
        deleted_s = wait_until(lambda: topic not in admin.list_topics(), deadline,
                               "topic %s to disappear from the topic list" % topic)
    finally:
        admin.close()
    return {"topic": topic, "partitions": 3, "create_visible_s": round(created_s, 3),
            "delete_visible_s": round(deleted_s, 3)}


def scenario_compression(opts: Options, deadline: Deadline) -> dict:
    admin = admin_client(opts)
    expected = mixed_records()
    topics = {codec: opts.topic(codec) for codec in COMPRESSIONS}
    try:
        for codec, topic in topics.items():
            create_topic(admin, topic, 1, deadline)
            p = producer(opts, compression_type=None if codec == "none" else codec)
            try:
                produce(p, topic, expected, deadline)
            finally:
                p.close(timeout=5)
    finally:
        admin.close()
    got = read_partitions(opts, list(topics.values()), len(expected) * len(topics), deadline)
    for codec, topic in topics.items():
        assert_same_records(expected, got[topic], "compression %s" % codec)
    return {"records_per_codec": {codec: len(got[t]) for codec, t in topics.items()}}


def scenario_roundtrip(opts: Options, deadline: Deadline) -> dict:
    admin = admin_client(opts)
    try:
        topic = opts.topic("t")
        create_topic(admin, topic, 1, deadline)
    finally:
        admin.close()
    expected = numbered_records(1, 3, "roundtrip")
    p = producer(opts)
    try:
        produce(p, topic, expected, deadline)
    finally:
        p.close(timeout=5)
    got = read_partition(opts, topic, len(expected), deadline)
    assert_same_records(expected, got, "roundtrip")
    return {"topic": topic, "records": len(got)}


def scenario_idempotent(opts: Options, deadline: Deadline) -> dict:
    admin = admin_client(opts)
    try:
        topic = opts.topic("t")
        create_topic(admin, topic, 1, deadline)
    finally:
        admin.close()
    expected = numbered_records(0, 49, "idempotent")
    p = producer(opts, enable_idempotence=True)
    hint = " (idempotent producer, kafka-python %s)" % kafka.__version__
    try:
        produce(p, topic, expected, deadline, hint=hint)
    finally:
        p.close(timeout=5)
    got = read_partition(opts, topic, len(expected), deadline)
    assert_same_records(expected, got, "idempotent")
    return {"topic": topic, "records": len(got)}


def consume_in_group(opts: Options, group: str, topic: str, count: int, until_quiet: bool,
                     deadline: Deadline, what: str):
    """Joins ``group`` and reads ``count`` records (on until quiet if asked).

    Returns ([(offset, Record)], seconds until the first assignment, consumer).
    """
    c = consumer(opts, group)
    c.subscribe([topic])
    started = time.monotonic()
    join_s = None
    reader = QuietReader(count, deadline, what)
    while True:
        if reader.finished(until_quiet):
            break
        max_records = reader.wanted(until_quiet)
        batches = c.poll(timeout_ms=int(POLL_S * 1000), max_records=max_records)
        if join_s is None and c.assignment():
            join_s = time.monotonic() - started
        for records in batches.values():
            reader.add((m.offset, to_record(m)) for m in records)
    if join_s is None:
        join_s = time.monotonic() - started
    return reader.records, join_s, c


def scenario_groups(opts: Options, deadline: Deadline) -> dict:
    admin = admin_client(opts)
    topic = opts.topic("t")
    group = opts.group("g")
    try:
        create_topic(admin, topic, 1, deadline)
    finally:
        admin.close()
    tp = TopicPartition(topic, 0)
    first_batch = numbered_records(1, 10)
    p = producer(opts)
    try:
        produce(p, topic, first_batch, deadline)

        read, join1, c1 = consume_in_group(opts, group, topic, 5, False, deadline,
                                           "first group member")
        try:
            assert_same_records(first_batch[:5], [r for _, r in read], "first member's records")
            next_offset = read[-1][0] + 1
            _wrap("commit", c1.commit, {tp: OffsetAndMetadata(next_offset, "", -1)})
            committed = c1.committed(tp)
            if committed != next_offset:
                raise ScenarioFailure("committed offset is %r after committing %d"
                                      % (committed, next_offset))
        finally:
            c1.close(autocommit=False)

        second_batch = numbered_records(11, 15)
        produce(p, topic, second_batch, deadline)
    finally:
        p.close(timeout=5)

    read2, join2, c2 = consume_in_group(opts, group, topic, 10, True, deadline,
                                        "second group member")
    try:
        assert_same_records(first_batch[5:] + second_batch, [r for _, r in read2],
                            "second member's records")
        _wrap("commit", c2.commit)
        final = c2.committed(tp)
        if final != read2[-1][0] + 1:
            raise ScenarioFailure("committed offset after resume is %r, expected %d"
                                  % (final, read2[-1][0] + 1))
    finally:
        c2.close(autocommit=False)
    return {"topic": topic, "group": group, "join_s": [round(join1, 3), round(join2, 3)],
            "resumed_at_offset": read2[0][0], "committed_offset": final}


def find_coordinator(admin: KafkaAdminClient, group: str) -> dict:
    """FindCoordinator through the client's own connections; reports the
    node id and the host/port exactly as the response carried them.

    kafka-python's admin client only exposes the coordinator's node id, so
    the request goes out through its connection manager (a private API)."""
    manager = admin._manager
    if manager.broker_version_data.api_version(FindCoordinatorRequest) >= 4:
        request = FindCoordinatorRequest(key_type=0, coordinator_keys=[group], min_version=4)
    else:
        request = FindCoordinatorRequest(key=group, key_type=0, max_version=3)

    async def send():
        return await manager.send(request)

    response = _wrap("FindCoordinator", manager.run, send)
    entries = getattr(response, "coordinators", None) or [response]
    entry = next((c for c in entries if getattr(c, "key", group) == group), None)
    if entry is None:
        raise ScenarioFailure("FindCoordinator for %s: no entry for the group in %r"
                              % (group, response))
    if entry.error_code != 0:
        raise ScenarioFailure("FindCoordinator for %s: %s"
                              % (group, for_code(entry.error_code).__name__))
    return broker_entry(entry.node_id, entry.host, entry.port)


def scenario_metadata(opts: Options, deadline: Deadline) -> dict:
    admin = admin_client(opts)
    try:
        cluster = _wrap("describe cluster", admin.describe_cluster)
        group = opts.group("g")
        coordinator = find_coordinator(admin, group)
    finally:
        admin.close()
    # DescribeCluster names the id broker_id; the Metadata fallback node_id.
    brokers = sorted((broker_entry(b.get("broker_id", b.get("node_id")), b["host"], b["port"])
                      for b in cluster["brokers"]),
                     key=lambda b: b["id"])
    return {"brokers": brokers, "controller": cluster.get("controller_id"),
            "cluster_id": cluster.get("cluster_id"), "coordinator": coordinator, "group": group}


def scenario_produce_payloads(opts: Options, deadline: Deadline) -> dict:
    pl = load_payloads(opts.payloads)
    p = producer(
        opts,
        acks="all",
        compression_type=None if pl.compression == "none" else pl.compression,
        enable_idempotence=pl.idempotent,
        max_in_flight_requests_per_connection=pl.max_in_flight,
        linger_ms=pl.linger_ms,
        retries=2147483647,
        retry_backoff_ms=100,
        delivery_timeout_ms=opts.delivery_timeout_ms,
        # kafka-python insists on delivery_timeout_ms >= linger_ms + request_timeout_ms.
        request_timeout_ms=max(1, min(30000, opts.delivery_timeout_ms - pl.linger_ms)),
    )
    outcomes = Outcomes(len(pl.records))
    futures = {}
    paused_s = None

    def flush():
        try:
            p.flush(timeout=max(0.1, deadline.remaining()))
        except KafkaError as e:
            raise ScenarioFailure("flush did not finish before the deadline: %s"
                                  % exception_text(e))
        for i, f in list(futures.items()):
            if not f.is_done:
                raise ScenarioFailure("record %d has no outcome after flush" % i)
            if f.succeeded():
                outcomes.delivered(i)
            else:
                outcomes.failed(i, exception_text(f.exception))
            del futures[i]

    try:
        for i in range(len(pl.records) + 1):
            if pause_due(opts, i):
                flush()
                paused_s = wait_for_pause_file(opts, deadline)
            if i == len(pl.records):
                break
            r = pl.records[i]
            try:
                futures[i] = p.send(pl.topic, key=r.key, value=r.value, headers=list(r.headers),
                                    partition=r.partition)
            except (KafkaError, TypeError, ValueError) as e:
                # kafka-python's send() refuses a null header value and a record with
                # neither key nor value; such a record fails here, without reaching the wire.
                outcomes.failed(i, "kafka-python %s send() refused the record: %s"
                                % (kafka.__version__, exception_text(e)))
        flush()
    finally:
        p.close(timeout=5)
    missing = outcomes.pending()
    if missing:
        raise ScenarioFailure("no outcome for records %s" % missing[:20])
    out = {"topic": pl.topic, "records": len(pl.records), "compression": pl.compression,
           "idempotent": pl.idempotent}
    out.update(outcomes.result())
    if paused_s is not None:
        out["paused_s"] = round(paused_s, 3)
    return out


SCENARIOS = {
    "admin": scenario_admin,
    "compression": scenario_compression,
    "groups": scenario_groups,
    "idempotent": scenario_idempotent,
    "metadata": scenario_metadata,
    "produce-payloads": scenario_produce_payloads,
    "roundtrip": scenario_roundtrip,
}


def run(opts: Options) -> dict:
    details = SCENARIOS[opts.scenario](opts, Deadline(opts.timeout_s))
    details["library"] = "kafka-python %s" % kafka.__version__
    return details
