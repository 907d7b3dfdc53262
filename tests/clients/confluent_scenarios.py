"""Scenarios driven through confluent-kafka (librdkafka)."""

from __future__ import annotations

import logging
import time
from typing import Optional

from confluent_kafka import (
    OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from common import (
    COMPRESSIONS, HEARTBEAT_INTERVAL_MS, POLL_S, SESSION_TIMEOUT_MS, Deadline, DrainReader,
    Options, Outcomes, Payloads, QuietReader, Record, ScenarioFailure, assert_same_records,
    broker_entry, consumed_entry, fetch_oauth_token, jwt_claims, load_payloads, mixed_records,
    normalize_headers, numbered_records, pause_due, wait_for_pause_file, wait_until,
)


class Session:
    """Client configuration plus the errors librdkafka reported through error_cb."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.errors: list = []
        self.notes: list = []
        # Admin clients and producers whose queued callbacks (error_cb, logs)
        # are served by check_errors(). Consumers serve theirs in poll().
        self._pollable: list = []

    def _error_cb(self, err: KafkaError) -> None:
        self.errors.append(err)

    def check_errors(self, allow_fatal: bool = False) -> None:
        """Fails fast on errors that retrying cannot fix (authentication, fatal).

        With ``allow_fatal`` a fatal producer error is left to the delivery reports, which
        then name it for every record it failed."""
        for client in self._pollable:
            client.poll(0)
        for err in self.errors:
            if err.code() == KafkaError._AUTHENTICATION or (err.fatal() and not allow_fatal):
                raise ScenarioFailure("client error: %s" % err.str())

    def error_summary(self) -> str:
        seen = []
        for text in [err.str() for err in self.errors] + self.notes:
            if text not in seen:
                seen.append(text)
        return "; ".join(seen[-3:]) if seen else "none"

    def _create(self, cls, conf: dict, what: str):
        try:
            return cls(conf)
        except KafkaException as e:
            raise ScenarioFailure("creating %s failed: %s (client errors: %s)"
                                  % (what, e, self.error_summary()))

    def _oauth_cb(self, _config: str):
        try:
            token, expires = fetch_oauth_token(self.opts)
        except Exception as e:  # raised inside librdkafka's callback: keep the reason
            self.notes.append("OAUTHBEARER token fetch failed: %s" % e)
            raise
        principal = jwt_claims(token).get("sub") or self.opts.oauth_client_id or "kafka-client"
        return token, expires, principal, {}

    def conf(self, **extra) -> dict:
        o = self.opts
        conf = {
            "bootstrap.servers": o.bootstrap,
            "client.id": "scenario-%s" % o.scenario,
            "security.protocol": o.security_protocol,
            "error_cb": self._error_cb,
            "logger": logging.getLogger("librdkafka"),
            "socket.timeout.ms": 10000,
        }
        if o.uses_ssl and o.ca_file:
            conf["ssl.ca.location"] = o.ca_file
        if o.uses_ssl and o.cert_file:
            conf["ssl.certificate.location"] = o.cert_file
            conf["ssl.key.location"] = o.key_file
        if o.uses_sasl:
            conf["sasl.mechanism"] = o.sasl_mechanism
            if o.sasl_mechanism == "OAUTHBEARER":
                # Token from the same client_credentials fetch the other
                # clients use. librdkafka's built-in OIDC mode insists on a
                # "sub" claim, which client_credentials tokens of some
                # providers (and the mock provider used in tests) lack.
                conf["oauth_cb"] = self._oauth_cb
            else:
                conf["sasl.username"] = o.sasl_username
                conf["sasl.password"] = o.sasl_password
        conf.update(extra)
        return conf

    def admin(self) -> AdminClient:
        client = self._create(AdminClient, self.conf(), "admin client")
        self._pollable.append(client)
        return client

    def producer(self, **extra) -> Producer:
        client = self._create(Producer, self.conf(**{"linger.ms": 50, "acks": "all", **extra}),
                              "producer")
        self._pollable.append(client)
        return client

    def forget(self, client) -> None:
        if client in self._pollable:
            self._pollable.remove(client)

    def result(self, future, deadline: Deadline, what: str):
        """Waits for an admin future while serving error callbacks."""
        while not future.done():
            self.check_errors()
            if deadline.expired():
                raise ScenarioFailure("%s: no answer before the deadline (client errors: %s)"
                                      % (what, self.error_summary()))
            time.sleep(0.05)
        try:
            return future.result()
        except KafkaException as e:
            self.check_errors()
            raise ScenarioFailure("%s failed: %s (client errors: %s)"
                                  % (what, e, self.error_summary()))

    def consumer(self, group: str, **extra) -> Consumer:
        return self._create(Consumer, self.conf(**{
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            **extra,
        }), "consumer")


# --- helpers -------------------------------------------------------------


def list_topics(s: Session, admin: AdminClient, deadline: Deadline, topic: Optional[str] = None):
    s.check_errors()
    try:
        return admin.list_topics(topic=topic, timeout=max(1.0, min(10.0, deadline.remaining())))
    except KafkaException as e:
        s.check_errors()
        raise ScenarioFailure("metadata request failed: %s (client errors: %s)"
                              % (e, s.error_summary()))


def create_topic(s: Session, admin: AdminClient, topic: str, partitions: int,
                 deadline: Deadline) -> float:
    started = time.monotonic()
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=10, request_timeout=15)
    s.result(futures[topic], deadline, "create topic %s" % topic)

    def visible():
        md = list_topics(s, admin, deadline)
        t = md.topics.get(topic)
        return (t is not None and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values()))

    wait_until(visible, deadline, "topic %s with %d partitions in metadata" % (topic, partitions))
    return time.monotonic() - started


def produce(s: Session, producer: Producer, topic: str, records, deadline: Deadline,
            partition: int = 0) -> None:
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)

    for r in records:
        while True:
            try:
                producer.produce(topic, key=r.key, value=r.value, headers=list(r.headers) or None,
                                 partition=partition, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = len(producer)
    while left:
        left = producer.flush(0.5)
        s.check_errors()
        if deadline.expired():
            break
    if failures:
        raise ScenarioFailure("delivery to %s failed: %s" % (topic, failures[0].str()))
    if left:
        raise ScenarioFailure("%d records to %s still undelivered at the deadline "
                              "(client errors: %s)" % (left, topic, s.error_summary()))


def to_record(msg) -> Record:
    return Record(msg.key(), msg.value(), normalize_headers(msg.headers()))


def read_partitions(s: Session, topics, expected: int, deadline: Deadline,
                    partition: int = 0) -> dict:
    """Reads one partition of each topic from the beginning, without group
    membership, until ``expected`` records arrived in total and the topics
    went quiet. Returns {topic: [Record]}."""
    c = s.consumer(s.opts.group("reader"))
    try:
        c.assign([TopicPartition(t, partition, OFFSET_BEGINNING) for t in topics])
        out = {t: [] for t in topics}
        reader = QuietReader(expected, deadline, "reading %s" % ", ".join(topics))
        while not reader.done():
            msg = c.poll(POLL_S)
            s.check_errors()
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise ScenarioFailure("fetch from %s failed: %s" % (msg.topic(), msg.error().str()))
            out[msg.topic()].append(to_record(msg))
            reader.add([msg.topic()])
        return out
    finally:
        c.close()


def read_partition(s: Session, topic: str, expected: int, deadline: Deadline) -> list:
    return read_partitions(s, [topic], expected, deadline)[topic]


def wait_assignment(s: Session, c: Consumer, deadline: Deadline, what: str):
    """Polls until the group join finished.

    Returns (seconds the join took, first message or None): a record that
    arrives while waiting is handed back so the caller does not lose it.
    """
    started = time.monotonic()
    while not c.assignment():
        s.check_errors()
        if deadline.expired():
            raise ScenarioFailure("%s: no partition assignment after %.1fs (client errors: %s)"
                                  % (what, time.monotonic() - started, s.error_summary()))
        msg = c.poll(0.1)
        if msg is not None:
            # A record arriving means the assignment is in place; keep it.
            return time.monotonic() - started, msg
    return time.monotonic() - started, None


# --- scenarios -----------------------------------------------------------


def scenario_admin(s: Session, deadline: Deadline) -> dict:
    admin = s.admin()
    topic = s.opts.topic("t")
    created_s = create_topic(s, admin, topic, 3, deadline)
    futures = admin.delete_topics([topic], operation_timeout=10, request_timeout=15)
    s.result(futures[topic], deadline, "delete topic %s" % topic)
    deleted_s = wait_until(lambda: topic not in list_topics(s, admin, deadline).topics,
                           deadline, "topic %s to disappear from metadata" % topic)
    return {"topic": topic, "partitions": 3, "create_visible_s": round(created_s, 3),
            "delete_visible_s": round(deleted_s, 3)}


def scenario_compression(s: Session, deadline: Deadline) -> dict:
    admin = s.admin()
    expected = mixed_records()
    topics = {codec: s.opts.topic(codec) for codec in COMPRESSIONS}
    for codec, topic in topics.items():
        create_topic(s, admin, topic, 1, deadline)
        produce(s, s.producer(**{"compression.type": codec}), topic, expected, deadline)
    got = read_partitions(s, list(topics.values()), len(expected) * len(topics), deadline)
    for codec, topic in topics.items():
        assert_same_records(expected, got[topic], "compression %s" % codec)
    return {"records_per_codec": {codec: len(got[t]) for codec, t in topics.items()}}


def scenario_roundtrip(s: Session, deadline: Deadline) -> dict:
    admin = s.admin()
    topic = s.opts.topic("t")
    create_topic(s, admin, topic, 1, deadline)
    expected = numbered_records(1, 3, "roundtrip")
    produce(s, s.producer(), topic, expected, deadline)
    got = read_partition(s, topic, len(expected), deadline)
    assert_same_records(expected, got, "roundtrip")
    return {"topic": topic, "records": len(got)}


def scenario_idempotent(s: Session, deadline: Deadline) -> dict:
    admin = s.admin()
    topic = s.opts.topic("t")
    create_topic(s, admin, topic, 1, deadline)
    expected = numbered_records(0, 49, "idempotent")
    produce(s, s.producer(**{"enable.idempotence": True}), topic, expected, deadline)
    got = read_partition(s, topic, len(expected), deadline)
    assert_same_records(expected, got, "idempotent")
    return {"topic": topic, "records": len(got)}


def consume_in_group(s: Session, group: str, topic: str, count: int, until_quiet: bool,
                     deadline: Deadline, what: str):
    """Joins ``group`` and reads ``count`` records.

    With ``until_quiet`` it keeps reading until the partition has been quiet
    for a while, so extra or repeated records show up. Returns
    ([(offset, Record)], join seconds, consumer); the caller commits and closes.
    """
    c = s.consumer(group)
    c.subscribe([topic])
    join_s, first = wait_assignment(s, c, deadline, what)
    reader = QuietReader(count, deadline, what)
    pending = [first] if first is not None else []
    while True:
        if reader.finished(until_quiet):
            break
        msg = pending.pop() if pending else c.poll(POLL_S)
        s.check_errors()
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise ScenarioFailure("%s: %s" % (what, msg.error().str()))
        reader.add([(msg.offset(), to_record(msg))])
    return reader.records, join_s, c


def committed_offset(c: Consumer, topic: str, deadline: Deadline) -> int:
    tps = c.committed([TopicPartition(topic, 0)], timeout=max(1.0, min(10.0, deadline.remaining())))
    if tps[0].error:
        raise ScenarioFailure("committed offsets lookup failed: %s" % tps[0].error)
    return tps[0].offset


def scenario_groups(s: Session, deadline: Deadline) -> dict:
    admin = s.admin()
    topic = s.opts.topic("t")
    group = s.opts.group("g")
    create_topic(s, admin, topic, 1, deadline)
    first_batch = numbered_records(1, 10)
    produce(s, s.producer(), topic, first_batch, deadline)

    read, join1, c1 = consume_in_group(s, group, topic, 5, False, deadline,
                                       "first group member")
    try:
        assert_same_records(first_batch[:5], [r for _, r in read], "first member's records")
        last_offset = read[-1][0]
        result = c1.commit(offsets=[TopicPartition(topic, 0, last_offset + 1)], asynchronous=False)
        for tp in result or []:
            if tp.error:
                raise ScenarioFailure("commit failed: %s" % tp.error)
        if committed_offset(c1, topic, deadline) != last_offset + 1:
            raise ScenarioFailure("committed offset is not %d after the first member's commit"
                                  % (last_offset + 1))
    finally:
        c1.close()

    second_batch = numbered_records(11, 15)
    produce(s, s.producer(), topic, second_batch, deadline)

    read2, join2, c2 = consume_in_group(s, group, topic, 10, True, deadline,
                                        "second group member")
    try:
        expected = first_batch[5:] + second_batch
        if len(read2) < len(expected):
            raise ScenarioFailure("second member read %d records, expected %d"
                                  % (len(read2), len(expected)))
        assert_same_records(expected, [r for _, r in read2], "second member's records")
        c2.commit(asynchronous=False)
        final = committed_offset(c2, topic, deadline)
        if final != read2[-1][0] + 1:
            raise ScenarioFailure("committed offset after resume is %d, expected %d"
                                  % (final, read2[-1][0] + 1))
    finally:
        c2.close()
    return {"topic": topic, "group": group, "join_s": [round(join1, 3), round(join2, 3)],
            "resumed_at_offset": read2[0][0], "committed_offset": final}


def scenario_metadata(s: Session, deadline: Deadline) -> dict:
    admin = s.admin()
    md = list_topics(s, admin, deadline)
    brokers = sorted((broker_entry(b.id, b.host, b.port) for b in md.brokers.values()),
                     key=lambda b: b["id"])
    out = {"brokers": brokers, "controller": md.controller_id, "cluster_id": md.cluster_id}

    try:
        dc = s.result(admin.describe_cluster(request_timeout=10), deadline.sub(15),
                      "describe cluster")
        out["described_cluster"] = {
            "nodes": sorted((broker_entry(n.id, n.host, n.port) for n in dc.nodes),
                            key=lambda b: b["id"]),
            "controller": broker_entry(dc.controller.id, dc.controller.host, dc.controller.port)
            if dc.controller else None,
        }
    except ScenarioFailure as e:
        s.check_errors()
        out["described_cluster_error"] = str(e)

    # Join a group so the coordinator is known for certain, then describe it.
    topic = s.opts.topic("t")
    group = s.opts.group("g")
    create_topic(s, admin, topic, 1, deadline)
    c = s.consumer(group)
    c.subscribe([topic])
    try:
        wait_assignment(s, c, deadline, "metadata group join")
        desc = s.result(admin.describe_consumer_groups([group], request_timeout=10)[group],
                        deadline, "describe group %s" % group)
        coord = desc.coordinator
        out["coordinator"] = broker_entry(coord.id, coord.host, coord.port)
        out["group"] = group
    finally:
        c.close()
    return out


# --- caller-driven scenarios --------------------------------------------------


def error_text(err: KafkaError) -> str:
    """"INVALID_RECORD (87): Broker: Invalid record ..." (librdkafka's text carries the
    broker's error message where it has one)."""
    text = "%s (%d): %s" % (err.name(), err.code(), err.str())
    if err.fatal():
        text += " [fatal]"
    return text


def payload_producer_conf(opts: Options, p: Payloads) -> dict:
    return {
        "acks": "all",
        "compression.type": p.compression,
        "enable.idempotence": p.idempotent,
        "max.in.flight.requests.per.connection": p.max_in_flight,
        "linger.ms": p.linger_ms,
        "retries": 2147483647,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 1000,
        # Reconnect soon after a lost connection (the default backs off up to 10 s), and to
        # the broker it knows: with the default "rebootstrap" recovery, librdkafka 2.16 drops
        # its brokers and starts over from the bootstrap address whenever every connection
        # is down at once, and under repeatedly cut connections it then delivers nothing
        # until the delivery timeout.
        "reconnect.backoff.max.ms": 1000,
        "metadata.recovery.strategy": "none",
        "delivery.timeout.ms": opts.delivery_timeout_ms,
        "request.timeout.ms": max(1000, min(30000, opts.delivery_timeout_ms)),
    }


class PayloadSender:
    """Produces payload records by index and collects one outcome per record."""

    def __init__(self, s: Session, producer: Producer, p: Payloads):
        self.s = s
        self.producer = producer
        self.p = p
        self.outcomes = Outcomes(len(p.records))

    def _report(self, index: int):
        def on_delivery(err, _msg):
            if err is None:
                self.outcomes.delivered(index)
            else:
                self.outcomes.failed(index, error_text(err))
        return on_delivery

    def send(self, index: int, deadline: Deadline) -> None:
        r = self.p.records[index]
        while True:
            try:
                self.producer.produce(self.p.topic, key=r.key, value=r.value,
                                      headers=list(r.headers) or None, partition=r.partition,
                                      on_delivery=self._report(index))
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self.producer.poll(0.1)
                if deadline.expired():
                    raise ScenarioFailure("the producer's queue stayed full until the deadline "
                                          "(record %d; client errors: %s)"
                                          % (index, self.s.error_summary()))
            except KafkaException as e:
                self.outcomes.failed(index, "produce() refused the record: " + error_text(e.args[0]))
                break
        self.producer.poll(0)

    def flush(self, deadline: Deadline) -> None:
        """Waits until every record produced so far has its delivery report."""
        while True:
            left = self.producer.flush(0.5)
            self.s.check_errors(allow_fatal=True)
            if left == 0:
                break
            if deadline.expired():
                raise ScenarioFailure("%d records still without a delivery report at the deadline "
                                      "(client errors: %s)" % (left, self.s.error_summary()))
        self.producer.poll(0)

    def check_all_reported(self, upto: int) -> None:
        missing = [i for i in self.outcomes.pending() if i < upto]
        if missing:
            raise ScenarioFailure("no delivery report for records %s after flush" % missing[:20])

    def details(self) -> dict:
        out = {"topic": self.p.topic, "records": len(self.p.records),
               "compression": self.p.compression, "idempotent": self.p.idempotent}
        out.update(self.outcomes.result())
        if self.s.errors:
            out["client_errors"] = self.s.error_summary()
        return out


def scenario_produce_payloads(s: Session, deadline: Deadline) -> dict:
    p = load_payloads(s.opts.payloads)
    sender = PayloadSender(s, s.producer(**payload_producer_conf(s.opts, p)), p)
    paused_s = None
    for i in range(len(p.records) + 1):
        if pause_due(s.opts, i):
            sender.flush(deadline)
            paused_s = wait_for_pause_file(s.opts, deadline)
        if i < len(p.records):
            sender.send(i, deadline)
    sender.flush(deadline)
    sender.check_all_reported(len(p.records))
    out = sender.details()
    if paused_s is not None:
        out["paused_s"] = round(paused_s, 3)
    return out


def scenario_produce_transaction(s: Session, deadline: Deadline) -> dict:
    o = s.opts
    p = load_payloads(o.payloads)
    conf = payload_producer_conf(o, p)
    conf.update({"transactional.id": o.transactional_id, "enable.idempotence": True,
                 "transaction.timeout.ms": max(60000, o.delivery_timeout_ms)})
    producer = s.producer(**conf)
    sender = PayloadSender(s, producer, p)

    def timeout() -> float:
        return max(1.0, min(30.0, deadline.remaining()))

    try:
        producer.init_transactions(timeout())
        producer.begin_transaction()
    except KafkaException as e:
        raise ScenarioFailure("starting transaction %s failed: %s (client errors: %s)"
                              % (o.transactional_id, error_text(e.args[0]), s.error_summary()))
    for i in range(len(p.records)):
        sender.send(i, deadline)
    sender.flush(deadline)

    committed = aborted = False
    errors = []
    abort = not o.commit
    if sender.outcomes.failures():
        errors.append("%d records failed, aborting" % len(sender.outcomes.failures()))
        abort = True
    if not abort:
        try:
            producer.commit_transaction(timeout())
            committed = True
        except KafkaException as e:
            err = e.args[0]
            errors.append("commit failed: " + error_text(err))
            if err.fatal():
                pass  # a fatal error leaves nothing to abort with
            else:
                abort = True
    if abort:
        try:
            producer.abort_transaction(timeout())
            aborted = True
        except KafkaException as e:
            errors.append("abort failed: " + error_text(e.args[0]))
    # Records purged by the abort get their reports now.
    sender.flush(deadline)
    for i in sender.outcomes.pending():
        sender.outcomes.failed(i, "no delivery report; the transaction was %s"
                               % ("aborted" if aborted else "not committed"))
    out = sender.details()
    out.update({"transactional_id": o.transactional_id, "committed": committed,
                "aborted": aborted, "requested": "commit" if o.commit else "abort",
                "error": "; ".join(errors) or None})
    return out


def topic_partition_ids(s: Session, client, topic: str, deadline: Deadline) -> list:
    """The partition numbers of ``topic``, waiting until the metadata lists it."""
    found: list = []

    def listed():
        md = client.list_topics(topic=topic, timeout=max(1.0, min(10.0, deadline.remaining())))
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return False
        found[:] = sorted(t.partitions)
        return True

    wait_until(listed, deadline, "topic %s in metadata" % topic)
    return found


def scenario_consume_all(s: Session, deadline: Deadline) -> dict:
    o = s.opts
    topic = o.read_topic
    c = s.consumer(o.group("reader"), **{"isolation.level": o.isolation,
                                         "enable.partition.eof": True})
    try:
        partitions = topic_partition_ids(s, c, topic, deadline)
        c.assign([TopicPartition(topic, n, OFFSET_BEGINNING) for n in partitions])
        reader = DrainReader(o.expect, partitions, deadline)
        entries = []
        while not reader.done():
            for msg in c.consume(num_messages=500, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        reader.end_of(msg.partition())
                        continue
                    raise ScenarioFailure("reading %s [%s]: %s"
                                          % (topic, msg.partition(), error_text(err)))
                _, ts = msg.timestamp()
                entries.append(consumed_entry(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                              normalize_headers(msg.headers()), ts))
                reader.record(msg.partition())
            s.check_errors()
    finally:
        c.close()
    out = reader.result(entries)
    out.update({"topic": topic, "isolation": o.isolation})
    return out


SCENARIOS = {
    "admin": scenario_admin,
    "compression": scenario_compression,
    "consume-all": scenario_consume_all,
    "groups": scenario_groups,
    "idempotent": scenario_idempotent,
    "metadata": scenario_metadata,
    "produce-payloads": scenario_produce_payloads,
    "produce-transaction": scenario_produce_transaction,
    "roundtrip": scenario_roundtrip,
}


def run(opts: Options) -> dict:
    import confluent_kafka
    s = Session(opts)
    details = SCENARIOS[opts.scenario](s, Deadline(opts.timeout_s))
    version = confluent_kafka.version()
    if isinstance(version, tuple):
        version = version[0]
    details["library"] = "confluent-kafka %s (librdkafka %s)" % (
        version, confluent_kafka.libversion()[0])
    return details
