#!/usr/bin/env python3
"""What wire-guard's data-quality checks cost a producer, against plain forwarding.

One run starts a single-node KRaft Kafka broker (scripts/kafka-broker, as bench/wire_guard.py
does) and one dev-registry, and warms the broker up untimed. Each round then creates fresh
topics (3 partitions each), registers their schemas, starts two fresh wire-guard release
binaries in front of the broker, and runs one librdkafka producer per row:

* direct: straight to the broker;
* passthrough: through the wire-guard started without --policies;
* avro: through the wire-guard started with --policies DIR --schema-registry-url URL, where
  DIR holds one `topics:` rule covering `dq-bench-*` (value: schema required, subject topic,
  on_invalid dead_letter dq-dlq-bench); every value is a valid Confluent-framed Avro record
  (magic 0, 4-byte schema id, Avro binary written by fastavro) of a schema registered under
  `<topic>-value`;
* avro_dlq10: the same, with every 10th value unframed bytes of the same length, which the
  proxy moves to dq-dlq-bench (3 partitions, created once per run); afterwards the topic's
  and the dead-letter topic's high watermarks must add up to exactly the records sent;
* avro_cel: the same as avro, with the schema registered carrying one CEL domain rule
  (`message.amount > 0`, mode WRITE, onFailure ERROR) that every record passes.

Every row sends the same values (the dead-letter row excepted, where every 10th is replaced by
as many unframed bytes), so MB/s (10^6 bytes of record values; records carry no key) compare
like for like. The producer: acks=all, enable.idempotence=true, linger.ms=5, batch.size at
librdkafka's default, compression none unless --compression says otherwise; timed from the
first produce() to the last delivery report, after an untimed first record (two in the
dead-letter row: one valid, one invalid) has opened the connections and had the proxy fetch
(and compile) the schema. The rows run in order in even rounds and in reverse in odd ones, so
drift over a round hits the rows alike; a bounded gate before each round and each row waits
for other work on the machine to calm down.

The two wire-guards are fresh per round and reused by the rows of that round (the validating
one serves avro, avro_dlq10 and avro_cel). Around each row the harness reads wire-guard's CPU
time (/proc/<pid>/stat, utime + stime), the broker's, its own and the machine's, and
wire-guard's /metrics (records by outcome, schema-cache lookups, Produce requests and their
broker time), and the producer's own view of its Produce requests (librdkafka statistics: round
trip, bytes per request); per round the peak RSS (VmHWM) of each wire-guard. Reported per row: the medians over rounds, and the median and range
of the per-round ratios to passthrough and to direct (the verdict: validation keeps >= 0.90 of
passthrough throughput), wire-guard CPU microseconds per record and milliseconds per MB, and
its CPU seconds per wall second (to tell whether it was CPU-bound). When a validated row misses
the target (or with --profile always) a profiling pass follows: a fresh pair of proxies, the
passthrough row and each validated row that missed (all three with --profile always) once
more, each under `perf record` on its proxy, and the hottest symbols of each. Results go to stdout and to <out-dir>/data-quality.{md,json}; timings are
reported against the target, never asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import signal
import string
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fastavro  # noqa: E402
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402

import wire_guard as wg  # noqa: E402
from wire_guard import (  # noqa: E402
    HOST, MB, NODE_ID, BenchError, Budget, ClientErrors, Managed, base_conf, cpu_seconds,
    cpu_split, create_topics, delete_topics, fmt, free_port, machine_cpu, median,
    proc_status_kib, scrape, tail, wait_for_port, wait_for_quiet,
)

ROOT = os.path.dirname(HERE)
TARGET_RATIO = 0.90
DLQ_TOPIC = "dq-dlq-bench"
TOPIC_PREFIX = "dq-bench-"

PHASES = ("direct", "passthrough", "avro", "avro_dlq10", "avro_cel")
VALIDATED = ("avro", "avro_dlq10", "avro_cel")
LABELS = {
    "direct": "direct (no proxy)",
    "passthrough": "passthrough (wire-guard, no `topics:` policy)",
    "avro": "validated (Avro)",
    "avro_dlq10": "validated, 10% dead-lettered",
    "avro_cel": "validated, one CEL rule",
}

AVRO_SCHEMA = {
    "type": "record",
    "name": "BenchRecord",
    "namespace": "bench.data_quality",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "payload", "type": "string"},
    ],
}
CEL_RULE_SET = {"domainRules": [{
    "name": "amount-positive", "kind": "CONDITION", "type": "CEL", "mode": "WRITE",
    "expr": "message.amount > 0", "onFailure": "ERROR",
}]}
POLICY_YAML = """\
# Written by bench/data_quality.py for one run.
topics:
  - id: bench-values
    match: ["%s*"]
    value: { schema: required, subject: topic, on_invalid: { dead_letter: "%s" } }
""" % (TOPIC_PREFIX, DLQ_TOPIC)


# --- values ----------------------------------------------------------------


def avro_bodies(record_bytes: int, count: int, seed: int, schema: dict = AVRO_SCHEMA,
                record=None) -> List[bytes]:
    """Avro binary of `count` records, each exactly record_bytes - 5 long (framing excluded).
    `record(i, rng)` gives record i with an empty `payload` string, which random letters then
    fill to the length; by default a 12-character id and a positive amount."""
    rng = random.Random(seed)
    parsed = fastavro.parse_schema(schema)
    if record is None:
        def record(i, rng):
            return {"id": "r-%010d" % i, "amount": rng.randint(1, 1_000_000), "payload": ""}
    want = record_bytes - 5
    letters = string.ascii_letters + string.digits
    out = []

    def enc(rec: dict) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, rec)
        return buf.getvalue()

    for i in range(count):
        rec = record(i, rng)
        n = want - len(enc(rec)) - 1  # the payload's length prefix grows with it
        for _ in range(4):
            rec["payload"] = "".join(rng.choice(letters) for _ in range(max(0, n)))
            got = len(enc(rec))
            if got == want:
                break
            n += want - got
        body = enc(rec)
        if len(body) != want:
            raise BenchError("cannot make a %d-byte Avro record (got %d)" % (want, len(body)))
        out.append(body)
    return out


def framed(schema_id: int, bodies: List[bytes]) -> List[bytes]:
    head = b"\x00" + struct.pack(">I", schema_id)
    return [head + b for b in bodies]


def with_invalid(pool: List[bytes], every: int, seed: int) -> List[bytes]:
    """pool with entry j replaced by unframed bytes of the same length when j % every ==
    every - 1; len(pool) is a multiple of `every`, so record i is invalid iff i % every ==
    every - 1."""
    rng = random.Random(seed + 1)
    out = list(pool)
    for j in range(every - 1, len(out), every):
        out[j] = b"{" + rng.randbytes(len(out[j]) - 1)  # no magic byte: reason no_magic_byte
    return out


# --- processes ---------------------------------------------------------------


class Registry:
    """The development registry (in memory), one per run."""

    def __init__(self, binary: str, workdir: str):
        self.port = free_port()
        self.log = os.path.join(workdir, "dev-registry.log")
        self.proc = Managed("dev-registry", [binary, "--listen", "%s:%d" % (HOST, self.port)],
                            self.log, env=dict(os.environ, RUST_LOG="warn"))
        wait_for_port(self.port, self.proc.proc, "dev-registry", self.log, 20)

    @property
    def url(self) -> str:
        return "http://%s:%d" % (HOST, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def register(self, subject: str, schema: dict, rule_set: Optional[dict] = None) -> int:
        body = {"schema": json.dumps(schema)}
        if rule_set is not None:
            body["ruleSet"] = rule_set
        req = urllib.request.Request(
            "%s/subjects/%s/versions" % (self.url, urllib.parse.quote(subject, safe="")),
            data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(json.loads(r.read())["id"])
        except (urllib.error.URLError, ValueError, KeyError) as e:
            raise BenchError("registering %s: %s" % (subject, e))

    def check_alive(self) -> None:
        self.proc.check_alive()

    def stop(self) -> None:
        self.proc.stop()


class Proxy:
    """A fresh wire-guard in front of the broker; `extra` adds policy and registry flags."""

    def __init__(self, binary: str, broker: wg.Broker, workdir: str, name: str, extra: List[str]):
        self.name = name
        self.listen_port = free_port()
        self.admin_port = free_port()
        node_port = free_port()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = Managed("wire-guard (%s)" % name, [
            binary,
            "--upstream", broker.bootstrap(),
            "--listen", "%s:%d" % (HOST, self.listen_port),
            "--broker-port-base", str(node_port - NODE_ID),
            "--admin-listen", "%s:%d" % (HOST, self.admin_port),
            "--drain-timeout-secs", "2",
            "--log-format", "json",
        ] + extra, os.path.join(workdir, "wire-guard-%s.log" % name), env=env)
        self.log = self.proc.log
        wait_for_port(self.listen_port, self.proc.proc, self.proc.name, self.log, 20)
        wait_for_port(self.admin_port, self.proc.proc, self.proc.name, self.log, 20)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def bootstrap(self) -> str:
        return "%s:%d" % (HOST, self.listen_port)

    def vmhwm_kib(self) -> Optional[int]:
        try:
            return proc_status_kib(self.pid, "VmHWM")
        except OSError:
            return None

    def check_alive(self) -> None:
        self.proc.check_alive()

    def stop(self) -> None:
        self.proc.stop()


class Round:
    """The processes a round runs against: the run's broker and registry, two fresh proxies."""

    def __init__(self, args, broker: wg.Broker, registry: Registry, policy_dir: str, workdir: str):
        self.broker = broker
        self.registry = registry
        self.proxies: Dict[str, Proxy] = {}
        self.proxies["passthrough"] = Proxy(args.wire_guard, broker, workdir, "passthrough", [])
        self.proxies["validated"] = Proxy(args.wire_guard, broker, workdir, "validated", [
            "--policies", policy_dir, "--schema-registry-url", registry.url])

    def proxy_for(self, phase: str) -> Optional[Proxy]:
        if phase == "direct":
            return None
        return self.proxies["passthrough" if phase == "passthrough" else "validated"]

    def bootstrap(self, phase: str) -> str:
        p = self.proxy_for(phase)
        return self.broker.bootstrap() if p is None else p.bootstrap()

    def pids(self) -> Dict[str, int]:
        out = {"broker": self.broker.pid, "registry": self.registry.pid}
        out.update({"proxy_" + k: p.pid for k, p in self.proxies.items()})
        return out

    def own_cpu(self) -> float:
        """CPU seconds of everything this benchmark runs (this process with librdkafka's
        threads, broker, registry, both proxies)."""
        return time.process_time() + sum(cpu_seconds(pid) for pid in self.pids().values())

    def check_alive(self) -> None:
        self.broker.check_alive()
        self.registry.check_alive()
        for p in self.proxies.values():
            p.check_alive()

    def stop(self) -> Dict[str, dict]:
        """Stops both proxies; returns each one's peak RSS and log summary."""
        out = {}
        for name, p in self.proxies.items():
            out[name] = {"vmhwm_kib": p.vmhwm_kib()}
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                print("warning: stopping %s: %s" % (p.proc.name, e), file=sys.stderr)
            out[name]["log"] = wg.proxy_log_summary(p.log)
        self.proxies = {}
        return out


class Gate:
    """Before a row: waits (bounded per row and in total) while work outside this benchmark
    uses more than `threshold` cores."""

    def __init__(self, per_wait: float, total_wait: float, threshold: float):
        self.per_wait = per_wait
        self.left = total_wait
        self.threshold = threshold

    def wait(self, rnd: Round) -> dict:
        start = time.monotonic()
        while True:
            a, own_a = machine_cpu(), rnd.own_cpu()
            time.sleep(1.0)
            b, own_b = machine_cpu(), rnd.own_cpu()
            other = max(0.0, (b["busy"] - a["busy"]) - (own_b - own_a))
            waited = time.monotonic() - start
            if other <= self.threshold or waited >= self.per_wait or self.left - waited <= 0:
                self.left -= waited
                return {"waited_s": round(waited, 1), "other_cores": round(other, 2)}


# --- metrics around a row ------------------------------------------------------


def proxy_metrics(proxy: Proxy) -> Dict[str, float]:
    """The /metrics figures a row is charged with."""
    out: Dict[str, float] = {}
    for k, v in scrape(proxy.admin_port).items():
        name, _, labels = k.partition("{")
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if name.endswith("records_total") and "outcome" in lab:
            out["records:%s:%s" % (lab.get("topic", "?"), lab["outcome"])] = v
        elif name.endswith("schema_cache_total") and "result" in lab:
            out["schema_cache:" + lab["result"]] = v
        elif name.endswith("schema_registry_seconds_count"):
            out["registry_requests"] = v
        elif name.endswith("bytes_total") and "direction" in lab:
            out["bytes:" + lab["direction"]] = v
        elif name.endswith("requests_total") and lab.get("api") == "Produce":
            out["produce_requests"] = v
        elif name.endswith(("upstream_latency_seconds_sum", "upstream_latency_seconds_count")) \
                and lab.get("api") == "Produce":
            # Integer-valued in the JSON; microseconds keep the sum's precision.
            out["produce_upstream_" + name.rsplit("_", 1)[1]] = v * (1e6 if name.endswith("_sum") else 1)
        elif name.endswith(("connection_errors_total", "connections_refused_total")):
            out["errors:" + k] = v
    return out


class RowMeter:
    """wire-guard (the row's), broker, client and machine CPU plus the proxy's counters, from
    start() (the first timed record) to stop() (its last delivery report)."""

    def __init__(self, rnd: Round, phase: str):
        self.rnd = rnd
        self.proxy = rnd.proxy_for(phase)
        self.stopped = False

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.pids = self.rnd.pids()
        self.cpu0 = {k: cpu_seconds(pid) for k, pid in self.pids.items()}
        self.split0 = cpu_split(self.proxy.pid) if self.proxy else (0.0, 0.0)
        self.client0 = time.process_time()
        self.machine0 = machine_cpu()
        self.metrics0 = proxy_metrics(self.proxy) if self.proxy else {}

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.wall_s = time.monotonic() - self.t0
        self.client_cpu_s = time.process_time() - self.client0
        self.cpu = {k: cpu_seconds(pid) - self.cpu0[k] for k, pid in self.pids.items()}
        split = cpu_split(self.proxy.pid) if self.proxy else (0.0, 0.0)
        self.proxy_user_s = split[0] - self.split0[0]
        self.proxy_sys_s = split[1] - self.split0[1]
        m1 = machine_cpu()
        self.machine_busy_s = m1["busy"] - self.machine0["busy"]
        self.steal_s = m1["steal"] - self.machine0["steal"]
        self.other_cpu_s = max(0.0, self.machine_busy_s - self.client_cpu_s - sum(self.cpu.values()))
        self.delta: Dict[str, float] = {}
        if self.proxy:
            m = proxy_metrics(self.proxy)
            self.delta = {k: v - self.metrics0.get(k, 0) for k, v in m.items()
                          if v - self.metrics0.get(k, 0)}

    def as_dict(self) -> dict:
        w = self.wall_s or float("nan")
        proxy_cpu = self.proxy_user_s + self.proxy_sys_s
        d = self.delta
        n_up = d.get("produce_upstream_count")
        return {
            # Broker time of a Produce request as wire-guard sees it (forwarded to answered).
            "proxy_produce_upstream_ms_mean": d["produce_upstream_sum"] / 1000 / n_up if n_up else None,
            "wall_s": round(self.wall_s, 3),
            "proxy_cpu_s": round(proxy_cpu, 3),
            "proxy_user_s": round(self.proxy_user_s, 3),
            "proxy_sys_s": round(self.proxy_sys_s, 3),
            "proxy_cores": round(proxy_cpu / w, 3),
            "broker_cpu_s": round(self.cpu["broker"], 3),
            "registry_cpu_s": round(self.cpu["registry"], 3),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "other_cpu_s": round(self.other_cpu_s, 3),
            "other_cores": round(self.other_cpu_s / w, 3),
            "machine_cores_busy": round(self.machine_busy_s / w, 3),
            "steal_s": round(self.steal_s, 3),
            "proxy_metrics": {k: int(v) for k, v in sorted(self.delta.items())},
        }


# --- the producer --------------------------------------------------------------


def producer_conf(bootstrap: str, errors: ClientErrors, compression: str) -> dict:
    conf = base_conf(bootstrap, errors, "dq-bench-producer")
    conf.update({"linger.ms": 5, "acks": "all", "enable.idempotence": True,
                 "compression.type": compression})
    return conf


def produce_run(bootstrap: str, topic: str, records: int, pool: List[bytes], warm: List[bytes],
                compression: str, timeout: float, stats: Optional[List[dict]] = None,
                meter: Optional["RowMeter"] = None) -> dict:
    """`warm` untimed (connections, the proxy's schema lookup), then `records` values
    pool[i % len(pool)], timed from the first produce() to the last delivery report; `meter`
    runs over that same span. With `stats`, librdkafka's statistics (every 100 ms) from the
    timed span are appended to it."""
    errors = ClientErrors()
    state = {"delivered": 0, "failed": 0, "last": 0.0, "first_error": None}

    def on_delivery(err, msg):
        if err is None:
            state["delivered"] += 1
        else:
            state["failed"] += 1
            if state["first_error"] is None:
                state["first_error"] = err.str()
        state["last"] = time.perf_counter()

    warm_errors: List[str] = []
    conf = producer_conf(bootstrap, errors, compression)
    if stats is not None:
        conf["statistics.interval.ms"] = 100
        conf["stats_cb"] = lambda js: stats.append(json.loads(js))
    producer = Producer(conf)
    try:
        for v in warm:
            producer.produce(topic, v, on_delivery=lambda err, msg: err and warm_errors.append(err.str()))
        if producer.flush(min(30.0, timeout)) or warm_errors:
            raise BenchError("warm-up records to %s undelivered: %s %s"
                             % (topic, warm_errors[:2], errors.seen[-3:]))
        n_pool = len(pool)
        produce = producer.produce
        poll = producer.poll
        deadline = time.monotonic() + timeout
        if stats is not None:
            del stats[:]
        if meter is not None:
            meter.start()
        t0 = time.perf_counter()
        i = 0
        while i < records:
            try:
                produce(topic, pool[i % n_pool], on_delivery=on_delivery)
                i += 1
            except BufferError:
                poll(0.001)
                if time.monotonic() > deadline:
                    raise BenchError("produce to %s: timed out with a full queue" % topic)
            if i % 1000 == 0:
                poll(0)
        while state["delivered"] + state["failed"] < records:
            poll(0.05)
            if time.monotonic() > deadline:
                raise BenchError("produce to %s: %d of %d delivered before the deadline; client "
                                 "errors: %s" % (topic, state["delivered"], records, errors.seen[-3:]))
        if meter is not None:
            meter.stop()
        elapsed = state["last"] - t0
    finally:
        producer.flush(5)
    if state["failed"]:
        raise BenchError("produce to %s: %d records failed (%s)"
                         % (topic, state["failed"], state["first_error"]))
    payload = records * len(pool[0])  # every value of a pool has the same length
    return {
        "records": records,
        "warm_up_records": len(warm),
        "payload_bytes": payload,
        "seconds": round(elapsed, 4),
        "mb_per_s": payload / MB / elapsed,
        "client_errors": errors.seen,
    }


def stored(bootstrap: str, topic: str, partitions: int) -> int:
    """Records a topic holds: high - low watermark summed over its partitions."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "dq-bench-watermarks",
                  "enable.auto.commit": False, "log_level": 3})
    try:
        total = 0
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            total += hi - lo
        return total
    finally:
        c.close()


def client_requests(stats: List[dict]) -> dict:
    """The producer's view of its Produce requests to broker node 1 over the timed span, from
    librdkafka statistics: mean round trip (`rtt`, weighted by each window's count) and bytes
    per request (the change in txbytes over the change in Produce requests)."""
    num = den = 0.0
    snaps = []
    for s in stats:
        for b in s.get("brokers", {}).values():
            if b.get("nodeid") != NODE_ID:
                continue
            rtt = b.get("rtt", {})
            if rtt.get("cnt"):
                num += rtt["avg"] * rtt["cnt"]
                den += rtt["cnt"]
            snaps.append((b.get("req", {}).get("Produce", 0), b.get("txbytes", 0)))
    out: dict = {"rtt_mean_ms": num / den / 1000 if den else None, "stats_windows": len(stats)}
    if len(snaps) >= 2 and snaps[-1][0] > snaps[0][0]:
        out["bytes_per_request"] = (snaps[-1][1] - snaps[0][1]) / (snaps[-1][0] - snaps[0][0])
    return out


# --- the run -------------------------------------------------------------------


def round_topics(run_id: str, rnd: int) -> Dict[str, str]:
    # Only the validated rows' topics fall under the policy's `dq-bench-*`.
    return {
        "direct": "dq-base-%s-r%d-direct" % (run_id, rnd),
        "passthrough": "dq-base-%s-r%d-passthrough" % (run_id, rnd),
        "avro": "%s%s-r%d-avro" % (TOPIC_PREFIX, run_id, rnd),
        "avro_dlq10": "%s%s-r%d-dlq10" % (TOPIC_PREFIX, run_id, rnd),
        "avro_cel": "%s%s-r%d-cel" % (TOPIC_PREFIX, run_id, rnd),
        "warm_direct": "dq-base-%s-r%d-warm-direct" % (run_id, rnd),
        "warm_passthrough": "dq-base-%s-r%d-warm-passthrough" % (run_id, rnd),
        "warm_validated": "%s%s-r%d-warm" % (TOPIC_PREFIX, run_id, rnd),
    }


def prepare_round(args, registry: Registry, bodies: List[bytes], topics: Dict[str, str],
                  broker: wg.Broker) -> Dict[str, dict]:
    """Creates the round's topics and registers their schemas; returns per row its value pool,
    warm-up values and schema id."""
    create_topics(broker.bootstrap(), list(topics.values()), args.partitions, 60)
    plain_id = registry.register(topics["avro"] + "-value", AVRO_SCHEMA)
    for key in ("avro_dlq10", "warm_validated"):
        registry.register(topics[key] + "-value", AVRO_SCHEMA)
    cel_id = registry.register(topics["avro_cel"] + "-value", AVRO_SCHEMA, CEL_RULE_SET)
    if cel_id == plain_id:
        raise BenchError("the schema with a rule set got the plain schema's id %d" % plain_id)
    plain = framed(plain_id, bodies)
    bad = with_invalid(plain, args.invalid_every, args.seed)
    cel = framed(cel_id, bodies)
    # The untimed first record(s): the dead-letter row sends one invalid too, so the proxy's
    # own dead-letter connection is open before the clock starts.
    return {
        "direct": {"pool": plain, "warm": [plain[0]], "schema_id": None},
        "passthrough": {"pool": plain, "warm": [plain[0]], "schema_id": None},
        "avro": {"pool": plain, "warm": [plain[0]], "schema_id": plain_id},
        "avro_dlq10": {"pool": bad, "warm": [bad[0], bad[args.invalid_every - 1]],
                       "schema_id": plain_id},
        "avro_cel": {"pool": cel, "warm": [cel[0]], "schema_id": cel_id},
        "warm_validated_pool": bad,
    }


def check_counts(args, broker: wg.Broker, phase: str, topic: str, result: dict,
                 dlq_before: int, meter: dict) -> dict:
    """What the topic (and the dead-letter topic) hold after a row, against what was sent."""
    n, warm = result["records"], result["warm_up_records"]
    in_topic = stored(broker.bootstrap(), topic, args.partitions)
    out = {"topic_records": in_topic}
    if phase == "avro_dlq10":
        dlq = stored(broker.bootstrap(), DLQ_TOPIC, args.partitions) - dlq_before
        invalid = n // args.invalid_every  # records i with i % every == every - 1
        out.update({
            "dlq_records": dlq,
            "total": in_topic + dlq,
            "expected_total": n + warm,
            "expected_dlq": invalid + 1,
            "expected_topic": n - invalid + warm - 1,
        })
        out["ok"] = (in_topic + dlq == n + warm and dlq == invalid + 1)
    else:
        out["expected_topic"] = n + warm
        out["ok"] = in_topic == n + warm
    # wire-guard's own account: records by outcome on this topic (warm-up included).
    outcomes = {k.rsplit(":", 1)[1]: v for k, v in meter["proxy_metrics"].items()
                if k.startswith("records:%s:" % topic)}
    if phase in VALIDATED:
        out["proxy_outcomes"] = outcomes
    if not out["ok"]:
        raise BenchError("%s: topic %s holds %d records%s; expected %s" % (
            phase, topic, in_topic,
            " and %s +%d" % (DLQ_TOPIC, out.get("dlq_records", 0)) if phase == "avro_dlq10" else "",
            json.dumps({k: v for k, v in out.items() if k.startswith("expected")})))
    return out


def run_round(args, rnd_no: int, run_id: str, broker: wg.Broker, registry: Registry,
              policy_dir: str, bodies: List[bytes], workdir: str, budget: Budget, gate: Gate,
              out: dict, topics: Dict[str, str], order: List[str]) -> None:
    """One round: fresh proxies, untimed warm-up through each, then the rows in `order`."""
    prep = prepare_round(args, registry, bodies, topics, broker)
    rnd = Round(args, broker, registry, policy_dir, workdir)
    out["proxies"] = {k: {"pid": p.pid} for k, p in rnd.proxies.items()}
    try:
        print("round %d: passthrough wire-guard on %s, validating wire-guard on %s; schema ids "
              "%d (plain) and %d (CEL rule); order %s; load %s"
              % (rnd_no, rnd.bootstrap("passthrough"), rnd.bootstrap("avro"),
                 prep["avro"]["schema_id"], prep["avro_cel"]["schema_id"], " ".join(order),
                 wg.loadavg()), flush=True)
        t = lambda cap: min(cap, max(1.0, budget.left()))  # noqa: E731
        if args.warmup_records:
            # Untimed: the broker's fresh partitions, each proxy's first connections and
            # buffers, the validating proxy's schema cache and dead-letter path.
            w0 = time.monotonic()
            produce_run(rnd.bootstrap("direct"), topics["warm_direct"], args.warmup_records,
                        prep["direct"]["pool"], [], args.compression, t(120.0))
            produce_run(rnd.bootstrap("passthrough"), topics["warm_passthrough"],
                        args.warmup_records, prep["passthrough"]["pool"], [], args.compression,
                        t(120.0))
            produce_run(rnd.bootstrap("avro"), topics["warm_validated"], args.warmup_records,
                        prep["warm_validated_pool"], [], args.compression, t(120.0))
            out["warm_up_s"] = round(time.monotonic() - w0, 1)
        for phase in order:
            budget.check("%s round %d" % (phase, rnd_no))
            gated = gate.wait(rnd)
            rnd.check_alive()
            dlq_before = stored(broker.bootstrap(), DLQ_TOPIC, args.partitions) \
                if phase == "avro_dlq10" else 0
            stats: List[dict] = []
            meter = RowMeter(rnd, phase)
            r = produce_run(rnd.bootstrap(phase), topics[phase], args.records,
                            prep[phase]["pool"], prep[phase]["warm"], args.compression, t(180.0),
                            stats, meter)
            rnd.check_alive()
            r["meter"] = meter.as_dict()
            r["client_requests"] = client_requests(stats)
            r["gate"] = gated
            r["topic"] = topics[phase]
            r["schema_id"] = prep[phase]["schema_id"]
            r["counts"] = check_counts(args, broker, phase, topics[phase], r, dlq_before, r["meter"])
            out["phases"][phase] = r
            m = r["meter"]
            cr = r["client_requests"]
            print("  round %d %-12s %7.1f MB/s  wire-guard %.2f cpu s (%.1f µs/record, %.2f cores)"
                  "; broker %.2f, client %.2f, other %.2f cpu s; machine %.2f cores; Produce rtt "
                  "%s ms (broker %s ms), %s KB/request; wall %.1f s%s"
                  % (rnd_no, phase, r["mb_per_s"], m["proxy_cpu_s"],
                     1e6 * m["proxy_cpu_s"] / r["records"], m["proxy_cores"], m["broker_cpu_s"],
                     m["client_cpu_s"], m["other_cpu_s"], m["machine_cores_busy"],
                     fmt(cr.get("rtt_mean_ms"), 2), fmt(m["proxy_produce_upstream_ms_mean"], 2),
                     fmt(cr["bytes_per_request"] / 1000 if cr.get("bytes_per_request") else None, 0),
                     m["wall_s"],
                     "; topic + %s = %d + %d" % (DLQ_TOPIC, r["counts"]["topic_records"],
                                                 r["counts"]["dlq_records"])
                     if phase == "avro_dlq10" else ""), flush=True)
    finally:
        out["proxy_end"] = rnd.stop()


# --- profiling -------------------------------------------------------------------


def perf_top(data: str, limit: int = 20) -> List[dict]:
    """The hottest symbols of a perf.data file (self time)."""
    try:
        res = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "dso,symbol", "--percent-limit", "0.5"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [{"error": str(e)}]
    rows = []
    for line in res.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.kH]\]\s+(.*)$", line)
        if m:
            # perf pads the line with empty columns ("-") after the symbol.
            sym = re.sub(r"(\s+-)+\s*$", "", m.group(3)).strip()
            rows.append({"pct": float(m.group(1)), "dso": m.group(2), "symbol": sym})
        if len(rows) >= limit:
            break
    return rows


def profile_pass(args, run_id: str, broker: wg.Broker, registry: Registry, policy_dir: str,
                 bodies: List[bytes], workdir: str, budget: Budget, phases: List[str]) -> dict:
    """Rows once more (passthrough and `phases`), each under `perf record` on its proxy."""
    if shutil.which("perf") is None:
        return {"error": "perf is not installed"}
    pdir = os.path.join(workdir, "profile")
    os.makedirs(pdir, exist_ok=True)
    topics = round_topics(run_id + "p", 0)
    prep = prepare_round(args, registry, bodies, topics, broker)
    rnd = Round(args, broker, registry, policy_dir, pdir)
    out: dict = {"frequency_hz": args.perf_frequency, "event": "cpu-clock", "runs": {}}
    try:
        # Untimed, unprofiled: each proxy's first connections, schema cache, dead-letter path.
        for warm_topic, warm_pool, phase in (
                (topics["warm_passthrough"], prep["passthrough"]["pool"], "passthrough"),
                (topics["warm_validated"], prep["warm_validated_pool"], "avro")):
            produce_run(rnd.bootstrap(phase), warm_topic, args.warmup_records or 10_000, warm_pool,
                        [], args.compression, min(120.0, budget.left()))
        for phase in ["passthrough"] + [p for p in VALIDATED if p in phases]:
            proxy = rnd.proxy_for(phase)
            data = os.path.join(pdir, "perf-%s.data" % phase)
            meter = RowMeter(rnd, phase)
            r, _ = wg.under_tracer(
                ["perf", "record", "-e", "cpu-clock", "-F", str(args.perf_frequency),
                 "-p", str(proxy.pid), "-o", data],
                None,
                lambda: produce_run(proxy.bootstrap(), topics[phase], args.records,
                                    prep[phase]["pool"], prep[phase]["warm"],
                                    args.compression, min(180.0, budget.left()), None, meter),
                os.path.join(pdir, "perf-%s.log" % phase))
            m = meter.as_dict()
            out["runs"][phase] = {"mb_per_s": r["mb_per_s"], "records": r["records"],
                                  "proxy_cpu_s": m["proxy_cpu_s"],
                                  "proxy_us_per_record": 1e6 * m["proxy_cpu_s"] / r["records"],
                                  "top": perf_top(data)}
            print("  profile %-12s %.1f MB/s under perf; wire-guard %.2f cpu s" % (
                phase, r["mb_per_s"], m["proxy_cpu_s"]), flush=True)
    finally:
        rnd.stop()
        delete_topics(broker.bootstrap(), list(topics.values()))
    return out


# --- summary and report ------------------------------------------------------------


def summarize(rounds: List[dict], args) -> dict:
    done = [r for r in rounds if all(p in r["phases"] for p in PHASES)]
    s: dict = {"rounds": len(done), "rows": {}}
    for phase in PHASES:
        mbs = [r["phases"][phase]["mb_per_s"] for r in done]
        direct = [r["phases"]["direct"]["mb_per_s"] for r in done]
        vs_pass = [r["phases"][phase]["mb_per_s"] / r["phases"]["passthrough"]["mb_per_s"]
                   for r in done]
        vs_direct = [r["phases"][phase]["mb_per_s"] / r["phases"]["direct"]["mb_per_s"]
                     for r in done]
        metas = [r["phases"][phase]["meter"] for r in done]
        recs = [r["phases"][phase]["records"] for r in done]
        mbytes = [r["phases"][phase]["payload_bytes"] / MB for r in done]
        cpu = [m["proxy_cpu_s"] for m in metas]
        us_rec = [1e6 * c / n for c, n in zip(cpu, recs)]
        pass_us = [1e6 * r["phases"]["passthrough"]["meter"]["proxy_cpu_s"]
                   / r["phases"]["passthrough"]["records"] for r in done]
        e = {
            "mb_per_s": median(mbs), "mb_per_s_range": [min(mbs), max(mbs)] if mbs else None,
            "direct_mb_per_s": median(direct),
            "ratio_vs_passthrough": median(vs_pass),
            "ratio_vs_passthrough_range": [min(vs_pass), max(vs_pass)] if vs_pass else None,
            "ratio_vs_direct": median(vs_direct),
            "ratio_vs_direct_range": [min(vs_direct), max(vs_direct)] if vs_direct else None,
            "proxy_cpu_us_per_record": median(us_rec) if phase != "direct" else None,
            "proxy_cpu_us_per_record_added": median([a - b for a, b in zip(us_rec, pass_us)])
            if phase in VALIDATED else None,
            "proxy_cpu_ms_per_mb": median([1000 * c / mb for c, mb in zip(cpu, mbytes)])
            if phase != "direct" else None,
            "proxy_cores": median([m["proxy_cores"] for m in metas]) if phase != "direct" else None,
            "proxy_user_share": median([m["proxy_user_s"] / m["proxy_cpu_s"] for m in metas
                                        if m["proxy_cpu_s"]]) if phase != "direct" else None,
            "machine_cores_busy": median([m["machine_cores_busy"] for m in metas]),
            "other_cores": median([m["other_cores"] for m in metas]),
            "broker_cpu_s": median([m["broker_cpu_s"] for m in metas]),
            "broker_cores": median([m["broker_cpu_s"] / m["wall_s"] for m in metas]),
            "client_cores": median([m["client_cpu_s"] / m["wall_s"] for m in metas]),
            "client_cpu_s": median([m["client_cpu_s"] for m in metas]),
            "wall_s": median([m["wall_s"] for m in metas]),
            "client_rtt_ms": median([r["phases"][phase]["client_requests"].get("rtt_mean_ms")
                                     for r in done]),
            "upstream_ms": median([m["proxy_produce_upstream_ms_mean"] for m in metas]),
            "requests": median([m["proxy_metrics"].get("produce_requests") for m in metas])
            if phase != "direct" else None,
            "bytes_per_request": median([r["phases"][phase]["client_requests"].get(
                "bytes_per_request") for r in done]),
        }
        if phase in VALIDATED and e["ratio_vs_passthrough"] is not None:
            e["target"] = TARGET_RATIO
            e["verdict"] = "met" if e["ratio_vs_passthrough"] >= TARGET_RATIO else "missed"
            lo, hi = e["ratio_vs_passthrough_range"]
            e["rounds_on_both_sides"] = lo < TARGET_RATIO <= hi
        s["rows"][phase] = e
    rss: Dict[str, List[int]] = {}
    for r in rounds:
        for name, d in r.get("proxy_end", {}).items():
            if d.get("vmhwm_kib"):
                rss.setdefault(name, []).append(d["vmhwm_kib"])
    s["proxy_peak_rss_kib"] = {k: max(v) for k, v in rss.items()}
    s["dlq_checks"] = [r["phases"]["avro_dlq10"]["counts"] for r in done]
    s["other_cores_max"] = max([r["phases"][p]["meter"]["other_cores"] for r in done
                                for p in PHASES], default=None)
    return s


def render_markdown(report: dict) -> str:
    m, p, s, v = report["machine"], report["parameters"], report["summary"], report["versions"]
    rows = s["rows"]
    lines = ["# wire-guard data-quality benchmark (Apache Kafka)", ""]
    lines.append(
        "Machine: %d vCPU (%s), %s GiB RAM, kernel %s; %s. Broker: %s (single KRaft node, %s "
        "heap, log.segment.delete.delay.ms=1000, warmed up untimed: %d produce runs of %d records); registry: dev-registry (in "
        "memory, same host); client: confluent-kafka %s (librdkafka %s); %s, release build, "
        "tree %s. Client, broker, registry and proxy share the cores."
        % (m["nproc"], m["cpu_model"], m["mem_gib"], m["kernel"], report["started_at"],
           v["kafka"], p["broker_heap"], p["broker_warmup_runs"], p["records"],
           m["confluent_kafka"], m["librdkafka"], v["wire_guard"], v["tree"]))
    lines.append("")
    lines.append(
        "%d rounds (%d completed), one run, one broker. Per round: fresh topics (%d partitions "
        "each), a fresh passthrough wire-guard (no `--policies`) and a fresh validating "
        "wire-guard (`--policies` with one `topics:` rule on `%s*`, dead letters to `%s`, "
        "`--schema-registry-url` the dev-registry), each reused by that round's rows; %d "
        "untimed records through each first. Each row: one librdkafka producer, %d records "
        "(values of %d bytes, no key), acks=all, enable.idempotence=true, linger.ms=5, "
        "batch.size default, compression %s; timed from the first produce() to the last "
        "delivery report, after an untimed first record. Rows run in the order listed in even "
        "rounds, reversed in odd ones. MB/s = 10^6 bytes of record values per second (keys: "
        "none). Ratios are per round (row / passthrough, row / direct in the same round), "
        "median and [min – max]; the verdict uses the median. wire-guard CPU = utime + stime "
        "of the row's wire-guard (/proc/<pid>/stat) over the row, divided by the records sent "
        "(validated ones, for the validated rows) or by the MB of values; cores = that CPU "
        "over the row's wall time."
        % (p["rounds"], s["rounds"], p["partitions"], p["topic_prefix"], p["dlq_topic"],
           p["warmup_records"], p["records"], p["record_bytes"], p["compression"]))
    lines.append("")
    lines.append("| row | MB/s direct | MB/s proxied | ratio vs passthrough | ratio vs direct | "
                 "target | verdict | wire-guard CPU µs/record | added over passthrough "
                 "µs/record | wire-guard CPU ms/MB | wire-guard cores busy |")
    lines.append("|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|")

    def rng(e: dict, key: str) -> str:
        if e.get(key) is None:
            return "n/a"
        lo, hi = e[key + "_range"]
        return "%.3f× [%.3f – %.3f]" % (e[key], lo, hi)

    for phase in PHASES:
        e = rows.get(phase)
        if not e:
            continue
        tgt = "≥ %.2f× of passthrough" % TARGET_RATIO if phase in VALIDATED else ""
        verdict = ""
        if phase in VALIDATED and e.get("verdict"):
            verdict = "met" if e["verdict"] == "met" else "**missed**"
            if e.get("rounds_on_both_sides"):
                verdict += " (rounds on both sides)"
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            LABELS[phase], fmt(e["direct_mb_per_s"]),
            fmt(e["mb_per_s"]) if phase != "direct" else "—",
            rng(e, "ratio_vs_passthrough") if phase in VALIDATED else "—",
            rng(e, "ratio_vs_direct") if phase != "direct" else "—",
            tgt, verdict,
            fmt(e["proxy_cpu_us_per_record"], 2), fmt(e["proxy_cpu_us_per_record_added"], 2),
            fmt(e["proxy_cpu_ms_per_mb"], 2), fmt(e["proxy_cores"], 2)))
    lines.append("")
    lines.append("Per Produce request, medians over rounds: the producer's mean round trip "
                 "(librdkafka statistics `rtt`, broker node 1) and the broker's share as "
                 "wire-guard measures it (`upstream_latency_seconds`, Produce: forwarded to "
                 "answered); the rest is the proxy hop, the check and, in the dead-letter row, "
                 "the dead-letter write, which wire-guard awaits before forwarding. KB per "
                 "request: librdkafka's bytes sent over its Produce requests.")
    lines.append("")
    lines.append("| row | Produce requests (wire-guard's count) | KB per request | round trip (ms) "
                 "| broker time via wire-guard (ms) | round trip − broker time (ms) |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for phase in PHASES:
        e = rows.get(phase)
        if not e:
            continue
        rest = (e["client_rtt_ms"] - e["upstream_ms"]
                if e.get("client_rtt_ms") is not None and e.get("upstream_ms") is not None else None)
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            LABELS[phase], fmt(e.get("requests"), 0),
            fmt(e["bytes_per_request"] / 1000 if e.get("bytes_per_request") else None, 0),
            fmt(e.get("client_rtt_ms"), 2), fmt(e.get("upstream_ms"), 2), fmt(rest, 2)))
    rss = s["proxy_peak_rss_kib"]
    lines.append("")
    lines.append("wire-guard peak RSS (VmHWM, max over rounds): validating %s, passthrough %s."
                 % tuple("%.1f MiB" % (rss[k] / 1024) if rss.get(k) else "n/a"
                         for k in ("validated", "passthrough")))
    lines.append("")
    busy = "; ".join("%s %s" % (ph, fmt(rows[ph]["machine_cores_busy"], 2)) for ph in PHASES
                     if ph in rows)
    lines.append("Machine cores busy during each row (all processes, /proc/stat, median over "
                 "rounds, of %d): %s. wire-guard's own: %s. Work outside the benchmark (machine "
                 "CPU minus client, broker, registry and proxies): at most %s cores in a row's "
                 "median, %s cores in the worst single row. Load average (1/5/15 min) before "
                 "the run %s, after %s."
                 % (m["nproc"], busy,
                    "; ".join("%s %s cores (%s%% user)" % (
                        ph, fmt(rows[ph]["proxy_cores"], 2),
                        fmt(100 * rows[ph]["proxy_user_share"] if rows[ph]["proxy_user_share"]
                            is not None else None, 0))
                        for ph in PHASES if ph in rows and ph != "direct"),
                    fmt(max([rows[ph]["other_cores"] for ph in rows] or [None]), 2)
                    if rows else "n/a",
                    fmt(s.get("other_cores_max"), 2),
                    " ".join("%.2f" % x for x in m.get("loadavg_before") or []),
                    " ".join("%.2f" % x for x in m.get("loadavg_after") or [])))
    lines.append("")
    lines += cpu_bound_lines(report)
    lines.append("")
    checks = s["dlq_checks"]
    if checks:
        lines.append(
            "Dead-letter accounting (high watermarks via `get_watermark_offsets`, per round): %s. "
            "Each round sent %d timed records plus 2 untimed warm-up records (1 valid, 1 "
            "invalid), every %dth timed record invalid."
            % ("; ".join("topic %d + %s %d = %d (expected %d: %d in the topic, %d dead-lettered) %s"
                         % (c["topic_records"], report["parameters"]["dlq_topic"], c["dlq_records"],
                            c["total"], c["expected_total"], c["expected_topic"], c["expected_dlq"],
                            "✓" if c["ok"] else "✗") for c in checks),
               p["records"], p["invalid_every"]))
        outs = [r["phases"]["avro_dlq10"]["counts"].get("proxy_outcomes")
                for r in report["rounds"] if "avro_dlq10" in r["phases"]]
        lines.append("")
        lines.append("wire-guard's `records_total` for the dead-letter row's topic over the timed "
                     "span (warm-up records excluded), per round: %s."
                     % "; ".join(json.dumps(o, sort_keys=True) for o in outs))
    lines.append("")
    logs = [d.get("log", {}) for r in report["rounds"] for d in r.get("proxy_end", {}).values()]
    warn = sum(lg.get("levels", {}).get("WARN", 0) for lg in logs)
    err = sum(lg.get("levels", {}).get("ERROR", 0) for lg in logs)
    lines.append("wire-guard logs (all rounds, warm-ups included): %d WARN lines (one per "
                 "dead-lettered record is expected), %d ERROR lines. Client-reported errors: %s."
                 % (warn, err, "; ".join(sorted({e for r in report["rounds"]
                                                 for ph in r["phases"].values()
                                                 for e in ph.get("client_errors", [])}))[:400]
                    or "none"))
    if report.get("profile"):
        lines.append("")
        lines += profile_lines(report["profile"])
    lines.append("")
    lines.append("## Per round")
    lines.append("")
    lines.append("| round | row | MB/s | s | wire-guard CPU s (user / sys) | broker CPU s | "
                 "client CPU s | other CPU s | machine cores busy | records in topic |")
    lines.append("|---:|---|---:|---:|---|---:|---:|---:|---:|---|")
    for r in report["rounds"]:
        for phase in r["order"]:
            if phase not in r["phases"]:
                continue
            x = r["phases"][phase]
            mm = x["meter"]
            c = x["counts"]
            held = "%d" % c["topic_records"] if phase != "avro_dlq10" else "%d + %d DLQ" % (
                c["topic_records"], c["dlq_records"])
            lines.append("| %d | %s | %.1f | %.2f | %.2f (%.2f / %.2f) | %.2f | %.2f | %.2f | %.2f "
                         "| %s |" % (r["round"], phase, x["mb_per_s"], x["seconds"],
                                     mm["proxy_cpu_s"], mm["proxy_user_s"], mm["proxy_sys_s"],
                                     mm["broker_cpu_s"], mm["client_cpu_s"], mm["other_cpu_s"],
                                     mm["machine_cores_busy"], held))
    lines.append("")
    lines.append("Reproduce: `%s` (%s, %.0f s wall)." % (report["command"], report["started_at"],
                                                        report["wall_s"]))
    if report.get("error"):
        lines.append("")
        lines.append("**Incomplete run:** %s" % report["error"])
    return "\n".join(lines) + "\n"


def cpu_bound_lines(report: dict) -> List[str]:
    rows = report["summary"]["rows"]
    nproc = report["machine"]["nproc"]
    if not rows:
        return []
    out = []
    for ph in PHASES:
        e = rows.get(ph)
        if not e:
            continue
        out.append("%s: wire-guard %s, broker %s, client (Python and librdkafka threads) %s, "
                   "machine %s"
                   % (ph, fmt(e["proxy_cores"], 2) if ph != "direct" else "—",
                      fmt(e["broker_cores"], 2), fmt(e["client_cores"], 2),
                      fmt(e["machine_cores_busy"], 2)))
    sat = [ph for ph in PHASES if ph in rows and rows[ph]["machine_cores_busy"] is not None
           and rows[ph]["machine_cores_busy"] >= 0.9 * nproc]
    text = ("CPU-bound? Cores busy (CPU s per wall s, medians over rounds, of %d): " % nproc
            + "; ".join(out) + ". wire-guard runs its work on a multi-threaded tokio runtime, so "
            "it alone is CPU-bound only near %d cores; " % nproc)
    if sat:
        text += ("the machine as a whole was at >= 90%% of its cores during %s, so client, "
                 "broker and proxy compete for CPU there and every CPU second wire-guard adds "
                 "comes out of the producer's and broker's share." % ", ".join(sat))
    else:
        text += "the machine as a whole stayed under 90% of its cores in every row."
    return [text]


def profile_lines(prof: dict) -> List[str]:
    lines = ["## Profile", ""]
    if prof.get("error"):
        return lines + ["Profiling did not run: %s" % prof["error"]]
    lines.append("`perf record -e cpu-clock -F %d -p <wire-guard>` during the passthrough row "
                 "and the validated rows named below, run once more after the rounds (fresh "
                 "proxies and topics; throughput under perf is not comparable). Self time, "
                 "symbols at >= 0.5%%:" % prof["frequency_hz"])
    lines.append("")
    for phase, run in prof.get("runs", {}).items():
        lines.append("**%s** (%.1f MB/s, wire-guard %.2f CPU s, %.2f µs/record):"
                     % (phase, run["mb_per_s"], run["proxy_cpu_s"], run["proxy_us_per_record"]))
        lines.append("")
        lines.append("| % | dso | symbol |")
        lines.append("|---:|---|---|")
        for t in run["top"][:15]:
            if "error" in t:
                lines.append("| | | %s |" % t["error"])
                continue
            sym = t["symbol"] if len(t["symbol"]) <= 110 else t["symbol"][:107] + "..."
            lines.append("| %.1f | %s | `%s` |" % (t["pct"], t["dso"], sym.replace("|", "\\|")))
        lines.append("")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wire-guard", required=True, help="wire-guard release binary")
    ap.add_argument("--dev-registry", required=True, help="dev-registry release binary")
    ap.add_argument("--kafka-libs", default=os.environ.get("KAFKA_LIBS"),
                    help="Kafka jars [$KAFKA_LIBS]")
    ap.add_argument("--kafka-broker", default=os.path.join(ROOT, "scripts", "kafka-broker"),
                    help="broker launcher script")
    ap.add_argument("--broker-heap", default="1g")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=200_000, help="records per row")
    ap.add_argument("--record-bytes", type=int, default=1024, help="bytes per value, framing included")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--compression", choices=("none", "lz4"), default="none")
    ap.add_argument("--invalid-every", type=int, default=10,
                    help="in the dead-letter row, every Nth record is invalid")
    ap.add_argument("--warmup-records", type=int, default=20_000,
                    help="untimed records through each path at the start of a round")
    ap.add_argument("--broker-warmup-runs", type=int, default=6,
                    help="untimed produce runs of --records each on the fresh broker")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="perf profile of wire-guard after the rounds (auto: when a validated "
                         "row misses %.2fx)" % TARGET_RATIO)
    ap.add_argument("--perf-frequency", type=int, default=999)
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--budget-s", type=float, default=720.0, help="wall-clock budget of the rounds")
    ap.add_argument("--quiet-wait-s", type=float, default=30.0,
                    help="longest wait for the machine to go idle before each round")
    ap.add_argument("--row-quiet-wait-s", type=float, default=10.0,
                    help="longest wait for other work to calm down before each row")
    ap.add_argument("--total-quiet-wait-s", type=float, default=60.0,
                    help="the per-row waits together at most")
    ap.add_argument("--quiet-cores", type=float, default=0.3,
                    help="other work below this many cores counts as calm")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if not args.kafka_libs:
        ap.error("--kafka-libs or $KAFKA_LIBS is required")
    if args.invalid_every < 2 or args.records < args.invalid_every:
        ap.error("--invalid-every must be >= 2 and <= --records")

    def on_term(signum, frame):
        raise KeyboardInterrupt("interrupted by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    command = os.environ.get("DATA_QUALITY_BENCH_COMMAND") or " ".join(sys.argv)
    budget = Budget(args.budget_s)
    machine = wg.machine_info()
    machine["loadavg_before"] = wg.loadavg()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    versions = {
        "kafka": wg.kafka_version(args.kafka_libs),
        "wire_guard": wg.tool_version([args.wire_guard, "--version"]),
        "tree": wg.git_state(),
    }
    print("machine: %d x %s, %s GiB, kernel %s; load %s; %s" % (
        machine["nproc"], machine["cpu_model"], machine["mem_gib"], machine["kernel"],
        machine["loadavg_before"], versions["kafka"]), flush=True)
    # 500 values: a multiple of --invalid-every for the usual 10 (checked below).
    pool_size = 500 - 500 % args.invalid_every
    bodies = avro_bodies(args.record_bytes, pool_size, args.seed)
    workdir = tempfile.mkdtemp(prefix="data-quality-bench-")
    policy_dir = os.path.join(workdir, "policies")
    os.makedirs(policy_dir)
    with open(os.path.join(policy_dir, "bench.yaml"), "w") as f:
        f.write(POLICY_YAML)
    gate = Gate(args.row_quiet_wait_s, args.total_quiet_wait_s, args.quiet_cores)
    rounds: List[dict] = []
    error = None
    broker: Optional[wg.Broker] = None
    registry: Optional[Registry] = None
    broker_warmup = None
    profile = None
    round_walls: List[float] = []
    run_id = "%x" % random.SystemRandom().getrandbits(32)
    try:
        registry = Registry(args.dev_registry, workdir)
        # Deleted topics' files go at once (default: a minute later, in some later round).
        broker = wg.Broker(args, os.path.join(workdir, "broker"),
                           ["log.segment.delete.delay.ms=1000"])
        print("kafka on %s, dev-registry on %s; warming the broker up (untimed)"
              % (broker.bootstrap(), registry.url), flush=True)
        t0 = time.monotonic()
        warm_topics = ["dq-warm-%s-%d" % (run_id, i) for i in range(args.broker_warmup_runs)]
        create_topics(broker.bootstrap(), warm_topics + [DLQ_TOPIC], args.partitions, 60)
        plain = framed(1, bodies)  # the broker does not look inside
        for t in warm_topics:
            produce_run(broker.bootstrap(), t, args.records, plain, [plain[0]], args.compression,
                        min(180.0, budget.left()))
        delete_topics(broker.bootstrap(), warm_topics)
        broker_warmup = {"seconds": round(time.monotonic() - t0, 1),
                         "runs": args.broker_warmup_runs, "records_per_run": args.records}
        print("warm-up done in %.0f s" % broker_warmup["seconds"], flush=True)
        for rnd_no in range(args.rounds):
            if round_walls and budget.left() < 1.2 * max(round_walls) + 30:
                print("stopping after %d rounds: %.0f s of budget left" % (rnd_no, budget.left()),
                      flush=True)
                break
            t_round = time.monotonic()
            quiet = wait_for_quiet(args.quiet_wait_s, 0.25)
            order = list(PHASES) if rnd_no % 2 == 0 else list(reversed(PHASES))
            topics = round_topics(run_id, rnd_no)
            out = {"round": rnd_no, "order": order, "start_gate": quiet, "phases": {}}
            rounds.append(out)
            rdir = os.path.join(workdir, "round-%d" % rnd_no)
            os.makedirs(rdir)
            try:
                run_round(args, rnd_no, run_id, broker, registry, policy_dir, bodies, rdir,
                          budget, gate, out, topics, order)
            finally:
                delete_topics(broker.bootstrap(), list(topics.values()))
            round_walls.append(time.monotonic() - t_round)
        summary = summarize(rounds, args)
        missed = [ph for ph in VALIDATED if summary["rows"].get(ph, {}).get("verdict") == "missed"]
        if args.profile == "always" or (args.profile == "auto" and missed):
            prof_phases = list(VALIDATED) if args.profile == "always" else missed
            print("profiling wire-guard (perf record): passthrough, %s" % ", ".join(prof_phases),
                  flush=True)
            try:
                profile = profile_pass(args, run_id, broker, registry, policy_dir, bodies, workdir,
                                       Budget(max(120.0, budget.left() + 120.0)), prof_phases)
            except (BenchError, KafkaException, OSError) as e:
                profile = {"error": "%s: %s" % (type(e).__name__, e)}
                print("profile error: %s" % profile["error"], file=sys.stderr, flush=True)
    except (BenchError, KafkaException, KeyboardInterrupt, OSError) as e:
        error = "%s: %s" % (type(e).__name__, e)
        print("error: %s" % error, file=sys.stderr, flush=True)
    finally:
        broker_peak = broker.vmhwm_kib() if broker else None
        for proc, name in ((broker, "kafka-broker"), (registry, "dev-registry")):
            if proc is not None:
                try:
                    proc.stop()
                except Exception as e:  # noqa: BLE001
                    print("warning: stopping %s: %s" % (name, e), file=sys.stderr)
        if error:
            for log in ([broker.log] if broker else []) + ([registry.log] if registry else []):
                print("--- %s (tail)\n%s" % (log, tail(log)), file=sys.stderr)

    summary = summarize(rounds, args)
    machine["loadavg_after"] = wg.loadavg()
    report = {
        "started_at": started_at,
        "wall_s": round(time.monotonic() - budget.start, 1),
        "command": command,
        "machine": machine,
        "versions": versions,
        "parameters": {
            "rounds": args.rounds,
            "records": args.records,
            "record_bytes": args.record_bytes,
            "partitions": args.partitions,
            "compression": args.compression,
            "invalid_every": args.invalid_every,
            "warmup_records": args.warmup_records,
            "broker_warmup_runs": args.broker_warmup_runs,
            "broker_heap": args.broker_heap,
            "broker_config": ["log.segment.delete.delay.ms=1000"],
            "seed": args.seed,
            "producer_conf": {"linger.ms": 5, "acks": "all", "enable.idempotence": True,
                              "compression.type": args.compression, "batch.size": "default",
                              "keys": None},
            "topic_prefix": TOPIC_PREFIX,
            "dlq_topic": DLQ_TOPIC,
            "policy_yaml": POLICY_YAML,
            "avro_schema": AVRO_SCHEMA,
            "cel_rule_set": CEL_RULE_SET,
            "proxies": "two fresh wire-guards per round (passthrough, validating), each reused "
                       "by that round's rows",
            "mb": "10^6 bytes of record values (no keys)",
        },
        "target": {"validated_ratio_vs_passthrough_min": TARGET_RATIO},
        "rounds_completed": summary["rounds"],
        "summary": summary,
        "broker_warmup": broker_warmup,
        "broker_peak_rss_kib": broker_peak,
        "profile": profile,
        "rounds": rounds,
        "error": error,
    }
    md = render_markdown(report)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "data-quality.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out_dir, "data-quality.md"), "w") as f:
        f.write(md)
    print()
    print(md, end="")
    if error:
        print("logs kept in %s" % workdir, file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
