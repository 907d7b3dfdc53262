"""Scenarios driven through aiokafka (asyncio protocol implementation)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Optional

import aiokafka
import aiokafka.errors
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.coordination import FindCoordinatorRequest

from common import (
    COMPRESSIONS, HEARTBEAT_INTERVAL_MS, POLL_S, SESSION_TIMEOUT_MS, Deadline, Options, Outcomes,
    QuietReader, Record, ScenarioFailure, assert_same_records, broker_entry, exception_text,
    fetch_oauth_token, load_payloads, mixed_records, normalize_headers, numbered_records, pause_due,
)

logging.getLogger("aiokafka").addHandler(logging.NullHandler())


class InvalidRecordError(aiokafka.errors.BrokerResponseError):
    """Kafka's INVALID_RECORD (87), which aiokafka's error table lacks: without it a refused
    record fails as UnknownError (-1) and the reason is lost. Not retriable either way, so
    registering it changes only the error the caller sees."""
    errno = 87
    message = "INVALID_RECORD"
    description = "This record has failed the validation on broker and hence will be rejected."


aiokafka.errors.kafka_errors.setdefault(InvalidRecordError.errno, InvalidRecordError)


class TokenProvider(AbstractTokenProvider):
    def __init__(self, opts: Options):
        self.opts = opts
        self._token: Optional[str] = None
        self._expires = 0.0

    async def token(self):
        if self._token is None or time.time() > self._expires - 30:
            loop = asyncio.get_running_loop()
            self._token, self._expires = await loop.run_in_executor(
                None, fetch_oauth_token, self.opts)
        return self._token


def client_conf(opts: Options) -> dict:
    conf = {
        "bootstrap_servers": opts.bootstrap,
        "client_id": "scenario-%s" % opts.scenario,
        "security_protocol": opts.security_protocol,
        "request_timeout_ms": 15000,
    }
    if opts.uses_ssl:
        conf["ssl_context"] = create_ssl_context(cafile=opts.ca_file, certfile=opts.cert_file,
                                                 keyfile=opts.key_file)
    if opts.uses_sasl:
        conf["sasl_mechanism"] = opts.sasl_mechanism
        if opts.sasl_mechanism == "OAUTHBEARER":
            conf["sasl_oauth_token_provider"] = TokenProvider(opts)
        else:
            conf["sasl_plain_username"] = opts.sasl_username
            conf["sasl_plain_password"] = opts.sasl_password
    return conf


async def _wrap(what: str, awaitable, deadline: Deadline):
    try:
        return await asyncio.wait_for(awaitable, timeout=max(0.5, deadline.remaining()))
    except asyncio.TimeoutError:
        raise ScenarioFailure("%s: timed out" % what)
    except KafkaError as e:
        raise ScenarioFailure("%s failed: %s: %s" % (what, type(e).__name__, e))


class Clients:
    """Starts clients and stops every one of them at the end of a scenario."""

    def __init__(self, opts: Options, deadline: Deadline):
        self.opts = opts
        self.deadline = deadline
        self._started: list = []

    async def _start(self, client, what: str):
        await _wrap("starting %s" % what, client.start(), self.deadline)
        self._started.append(client)
        return client

    async def admin(self) -> AIOKafkaAdminClient:
        return await self._start(AIOKafkaAdminClient(**client_conf(self.opts)), "admin client")

    async def producer(self, **extra) -> AIOKafkaProducer:
        conf = dict(client_conf(self.opts), linger_ms=50, acks="all")
        conf.update(extra)
        return await self._start(AIOKafkaProducer(**conf), "producer")

    async def consumer(self, group: Optional[str], *topics: str) -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(
            *topics,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            **client_conf(self.opts),
        )
        return await self._start(c, "consumer")

    async def stop(self, client) -> None:
        if client in self._started:
            self._started.remove(client)
            try:
                await asyncio.wait_for(_stop(client), timeout=10)
            except Exception:
                pass

    async def stop_all(self) -> None:
        for client in reversed(list(self._started)):
            await self.stop(client)


async def _stop(client):
    if isinstance(client, AIOKafkaAdminClient):
        await client.close()
    else:
        await client.stop()


# --- helpers -------------------------------------------------------------


def _response_errors(response):
    """(topic, error code, message) for CreateTopics/DeleteTopics responses."""
    out = []
    for attr in ("topic_errors", "topic_error_codes", "topics", "responses"):
        for entry in getattr(response, attr, None) or []:
            if isinstance(entry, tuple):
                out.append((entry[0], entry[1], entry[2] if len(entry) > 2 else None))
            else:
                out.append((getattr(entry, "name", None), getattr(entry, "error_code", 0),
                            getattr(entry, "error_message", None)))
    return out


def check_topic_errors(response, what: str) -> None:
    for topic, code, message in _response_errors(response):
        if code:
            raise ScenarioFailure("%s %s: %s %s" % (what, topic, for_code(code).__name__,
                                                    message or ""))


async def wait_until(check, deadline: Deadline, what: str, interval: float = 0.25) -> float:
    start = time.monotonic()
    last_error = None
    while True:
        try:
            if await check():
                return time.monotonic() - start
            last_error = None
        except ScenarioFailure:
            raise
        except Exception as e:
            last_error = e
        if deadline.expired():
            suffix = " (last error: %r)" % last_error if last_error else ""
            raise ScenarioFailure("timed out after %.1fs waiting for %s%s"
                                  % (time.monotonic() - start, what, suffix))
        await asyncio.sleep(interval)


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> Optional[int]:
    for t in await admin.describe_topics([topic]):
        if t.get("topic") == topic and t.get("error_code", 0) == 0:
            return len(t.get("partitions") or [])
    return None


async def create_topic(admin: AIOKafkaAdminClient, topic: str, partitions: int,
                       deadline: Deadline) -> float:
    started = time.monotonic()
    response = await _wrap("create topic %s" % topic, admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)], timeout_ms=10000),
        deadline)
    check_topic_errors(response, "create topic")

    async def visible():
        return await topic_partitions(admin, topic) == partitions

    await wait_until(visible, deadline, "topic %s with %d partitions in metadata"
                     % (topic, partitions))
    return time.monotonic() - started


async def produce(p: AIOKafkaProducer, topic: str, records, deadline: Deadline,
                  partition: int = 0, hint: str = "") -> None:
    futures = []
    for r in records:
        futures.append(await _wrap("send", p.send(topic, value=r.value, key=r.key,
                                                  partition=partition,
                                                  headers=list(r.headers)), deadline))
    for i, f in enumerate(futures):
        try:
            await asyncio.wait_for(f, timeout=max(0.5, deadline.remaining()))
        except asyncio.TimeoutError:
            raise ScenarioFailure("delivery of record %d to %s timed out%s" % (i, topic, hint))
        except KafkaError as e:
            raise ScenarioFailure("delivery of record %d to %s failed: %s: %s%s"
                                  % (i, topic, type(e).__name__, e, hint))


def to_record(msg) -> Record:
    return Record(msg.key, msg.value, normalize_headers(msg.headers))


async def read_partitions(clients: Clients, topics, expected: int, deadline: Deadline,
                          partition: int = 0) -> dict:
    """Reads one partition of each topic from the beginning, without group
    membership, until ``expected`` records arrived in total and the topics
    went quiet. Returns {topic: [Record]}."""
    c = await clients.consumer(None)
    try:
        tps = [TopicPartition(t, partition) for t in topics]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out = {t: [] for t in topics}
        reader = QuietReader(expected, deadline, "reading %s" % ", ".join(topics))
        while not reader.done():
            batches = await _wrap("fetch", c.getmany(timeout_ms=int(POLL_S * 1000)), deadline)
            for tp, records in batches.items():
                out[tp.topic].extend(to_record(m) for m in records)
                reader.add([tp.topic] * len(records))
        return out
    finally:
        await clients.stop(c)


async def read_partition(clients: Clients, topic: str, expected: int, deadline: Deadline) -> list:
    return (await read_partitions(clients, [topic], expected, deadline))[topic]


# --- scenarios -----------------------------------------------------------


async def scenario_admin(clients: Clients, deadline: Deadline) -> dict:
    opts = clients.opts
    admin = await clients.admin()
    topic = opts.topic("t")
    created_s = await create_topic(admin, topic, 3, deadline)
    if topic not in await admin.list_topics():
        raise ScenarioFailure("topic %s missing from list_topics()" % topic)
    check_topic_errors(await _wrap("delete topic %s" % topic,
                                   admin.delete_topics([topic], timeout_ms=10000), deadline),
                       "delete topic")

    async def gone():
        return topic not in await admin.list_topics()

    deleted_s = await wait_until(gone, deadline, "topic %s to disappear from the topic list" % topic)
    return {"topic": topic, "partitions": 3, "create_visible_s": round(created_s, 3),
            "delete_visible_s": round(deleted_s, 3)}


async def scenario_compression(clients: Clients, deadline: Deadline) -> dict:
    opts = clients.opts
    admin = await clients.admin()
    expected = mixed_records()
    topics = {codec: opts.topic(codec) for codec in COMPRESSIONS}
    for codec, topic in topics.items():
        await create_topic(admin, topic, 1, deadline)
        p = await clients.producer(compression_type=None if codec == "none" else codec)
        try:
            await produce(p, topic, expected, deadline)
        finally:
            await clients.stop(p)
    got = await read_partitions(clients, list(topics.values()), len(expected) * len(topics),
                                deadline)
    for codec, topic in topics.items():
        assert_same_records(expected, got[topic], "compression %s" % codec)
    return {"records_per_codec": {codec: len(got[t]) for codec, t in topics.items()}}


async def scenario_roundtrip(clients: Clients, deadline: Deadline) -> dict:
    admin = await clients.admin()
    topic = clients.opts.topic("t")
    await create_topic(admin, topic, 1, deadline)
    expected = numbered_records(1, 3, "roundtrip")
    p = await clients.producer()
    await produce(p, topic, expected, deadline)
    got = await read_partition(clients, topic, len(expected), deadline)
    assert_same_records(expected, got, "roundtrip")
    return {"topic": topic, "records": len(got)}


async def scenario_idempotent(clients: Clients, deadline: Deadline) -> dict:
    admin = await clients.admin()
    topic = clients.opts.topic("t")
    await create_topic(admin, topic, 1, deadline)
    expected = numbered_records(0, 49, "idempotent")
    hint = " (idempotent producer; aiokafka %s sends InitProducerId v0)" % aiokafka.__version__
    try:
        p = await clients.producer(enable_idempotence=True)
    except ScenarioFailure as e:
        raise ScenarioFailure(str(e) + hint)
    await produce(p, topic, expected, deadline, hint=hint)
    got = await read_partition(clients, topic, len(expected), deadline)
    assert_same_records(expected, got, "idempotent")
    return {"topic": topic, "records": len(got)}


async def consume_in_group(clients: Clients, group: str, topic: str, count: int,
                           until_quiet: bool, deadline: Deadline, what: str):
    """Joins ``group`` and reads ``count`` records (on until quiet if asked).

    Returns ([(offset, Record)], seconds until the first assignment, consumer).
    """
    started = time.monotonic()
    c = await clients.consumer(group, topic)
    join_s = None
    reader = QuietReader(count, deadline, what)
    while True:
        if reader.finished(until_quiet):
            break
        max_records = reader.wanted(until_quiet)
        batches = await _wrap(what, c.getmany(timeout_ms=int(POLL_S * 1000),
                                              max_records=max_records), deadline)
        if join_s is None and c.assignment():
            join_s = time.monotonic() - started
        for records in batches.values():
            reader.add((m.offset, to_record(m)) for m in records)
    if join_s is None:
        join_s = time.monotonic() - started
    return reader.records, join_s, c


async def scenario_groups(clients: Clients, deadline: Deadline) -> dict:
    opts = clients.opts
    admin = await clients.admin()
    topic = opts.topic("t")
    group = opts.group("g")
    await create_topic(admin, topic, 1, deadline)
    tp = TopicPartition(topic, 0)
    p = await clients.producer()
    first_batch = numbered_records(1, 10)
    await produce(p, topic, first_batch, deadline)

    read, join1, c1 = await consume_in_group(clients, group, topic, 5, False, deadline,
                                             "first group member")
    try:
        assert_same_records(first_batch[:5], [r for _, r in read], "first member's records")
        next_offset = read[-1][0] + 1
        await _wrap("commit", c1.commit({tp: next_offset}), deadline)
        committed = await _wrap("committed", c1.committed(tp), deadline)
        if committed != next_offset:
            raise ScenarioFailure("committed offset is %r after committing %d"
                                  % (committed, next_offset))
    finally:
        await clients.stop(c1)

    second_batch = numbered_records(11, 15)
    await produce(p, topic, second_batch, deadline)

    read2, join2, c2 = await consume_in_group(clients, group, topic, 10, True, deadline,
                                              "second group member")
    assert_same_records(first_batch[5:] + second_batch, [r for _, r in read2],
                        "second member's records")
    await _wrap("commit", c2.commit(), deadline)
    final = await _wrap("committed", c2.committed(tp), deadline)
    if final != read2[-1][0] + 1:
        raise ScenarioFailure("committed offset after resume is %r, expected %d"
                              % (final, read2[-1][0] + 1))
    return {"topic": topic, "group": group, "join_s": [round(join1, 3), round(join2, 3)],
            "resumed_at_offset": read2[0][0], "committed_offset": final}


async def scenario_metadata(clients: Clients, deadline: Deadline) -> dict:
    admin = await clients.admin()
    cluster = await _wrap("describe cluster", admin.describe_cluster(), deadline)
    brokers = sorted((broker_entry(b["node_id"], b["host"], b["port"]) for b in cluster["brokers"]),
                     key=lambda b: b["id"])
    group = clients.opts.group("g")
    # FindCoordinator through the client's own connection; the response's
    # host and port are reported as received.
    client = admin._client
    node_id = client.get_random_node()
    response = await _wrap("FindCoordinator", client.send(node_id, FindCoordinatorRequest(group, 0)),
                           deadline)
    if response.error_code != 0:
        raise ScenarioFailure("FindCoordinator for %s: %s"
                              % (group, for_code(response.error_code).__name__))
    return {"brokers": brokers, "controller": cluster.get("controller_id"),
            "cluster_id": cluster.get("cluster_id"), "group": group,
            "coordinator": broker_entry(response.coordinator_id, response.host, response.port)}


async def scenario_produce_payloads(clients: Clients, deadline: Deadline) -> dict:
    """aiokafka has no max-in-flight or delivery-timeout setting: it sends one batch per
    partition at a time, and retries a failed batch until its request timeout has passed
    since the batch was made (forever with idempotence; the scenario's deadline bounds it)."""
    opts = clients.opts
    pl = load_payloads(opts.payloads)
    hint = " (aiokafka %s, idempotence %s)" % (aiokafka.__version__,
                                              "on" if pl.idempotent else "off")
    try:
        p = await clients.producer(
            acks="all",
            compression_type=None if pl.compression == "none" else pl.compression,
            enable_idempotence=pl.idempotent,
            linger_ms=pl.linger_ms,
            retry_backoff_ms=100,
            request_timeout_ms=max(1000, min(30000, opts.delivery_timeout_ms)),
        )
    except ScenarioFailure as e:
        raise ScenarioFailure(str(e) + hint)
    outcomes = Outcomes(len(pl.records))
    futures = {}
    paused_s = None

    async def flush():
        try:
            await asyncio.wait_for(p.flush(), timeout=max(0.1, deadline.remaining()))
        except asyncio.TimeoutError:
            raise ScenarioFailure("flush did not finish before the deadline%s" % hint)
        for i, f in list(futures.items()):
            try:
                await asyncio.wait_for(f, timeout=max(0.1, deadline.remaining()))
                outcomes.delivered(i)
            except asyncio.TimeoutError:
                raise ScenarioFailure("record %d has no outcome at the deadline%s" % (i, hint))
            except Exception as e:  # the delivery's own error, whatever its class
                outcomes.failed(i, exception_text(e))
            del futures[i]

    for i in range(len(pl.records) + 1):
        if pause_due(opts, i):
            await flush()
            started = time.monotonic()
            while not os.path.exists(opts.pause_file):
                if deadline.expired():
                    raise ScenarioFailure("paused after %d records: %s did not appear before the "
                                          "deadline" % (opts.pause_after, opts.pause_file))
                await asyncio.sleep(0.1)
            paused_s = time.monotonic() - started
        if i == len(pl.records):
            break
        r = pl.records[i]
        try:
            futures[i] = await asyncio.wait_for(
                p.send(pl.topic, value=r.value, key=r.key, partition=r.partition,
                       headers=list(r.headers)),
                timeout=max(0.1, deadline.remaining()))
        except asyncio.TimeoutError:
            raise ScenarioFailure("record %d could not be queued before the deadline%s" % (i, hint))
        except (KafkaError, TypeError, ValueError, AssertionError) as e:
            # aiokafka refuses a partition the topic does not have with an AssertionError.
            outcomes.failed(i, "aiokafka %s send() refused the record: %s"
                            % (aiokafka.__version__, exception_text(e)))
    await flush()
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


async def _run(opts: Options) -> dict:
    deadline = Deadline(opts.timeout_s)
    clients = Clients(opts, deadline)
    try:
        return await asyncio.wait_for(SCENARIOS[opts.scenario](clients, deadline),
                                      timeout=opts.timeout_s + 5)
    except asyncio.TimeoutError:
        raise ScenarioFailure("scenario did not finish within %.0fs" % opts.timeout_s)
    finally:
        await clients.stop_all()


def run(opts: Options) -> dict:
    details = asyncio.run(_run(opts))
    details["library"] = "aiokafka %s" % aiokafka.__version__
    return details
