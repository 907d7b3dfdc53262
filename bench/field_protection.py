#!/usr/bin/env python3
"""What wire-guard's field protection costs producers and consumers, against plain forwarding.

One run starts a single-node KRaft Kafka broker (scripts/kafka-broker) and one dev-registry,
warms the broker up untimed, and writes a local keyring (the KMS of these rows). Each round
starts two fresh wire-guard release binaries in front of the broker: one without policies
(passthrough) and one with `fields:` rules and --kms-local-keyring (protecting). Every value is
a Confluent-framed 1 KB Avro record (magic 0, 4-byte schema id, fastavro binary) of a schema
with a 16-character `card`, a 20-character `email`, an amount and a filler string. Rows, each
one librdkafka client run:

* produce direct / passthrough: straight to the broker, and through the passthrough proxy;
* produce encrypt: through the protecting proxy, `card` and `email` encrypted (AES-256-GCM
  envelope, data keys from the local keyring through the cache);
* produce tokenize: `card` and `email` tokenized (HMAC-SHA256 under a derived key);
* produce sign: every record signed (HMAC-SHA256 over key, value and headers, in a header);
* consume direct / passthrough: the passthrough row's records read back straight and through
  the passthrough proxy;
* consume masked: the records of a topic whose rule masks both fields with a key (stored
  encrypted), read through the protecting proxy by a reader outside `reveal_to`, so every
  field is decrypted and masked.

Producer: acks=all, enable.idempotence=true, linger.ms=5, batch.size 512 KB (room for what
protection adds below the broker's 1 MiB), compression none; timed from the
first produce() to the last delivery report after untimed warm-up records. Consumer: assigned
all partitions from offset 0, timed from the first poll to the last expected record. MB/s is
10^6 bytes of record values (as produced: encrypted values are larger on the way out). Rows
run in order in even rounds and reversed in odd ones. Reported: the medians over rounds, the
median per-round ratio to the passthrough row of the same direction (target: encryption keeps
>= 0.85 of passthrough produce throughput), the KMS calls the protecting proxy made per 1000
records protected (target: < 1), and the length of an encrypted 16-character field as stored
(target: <= 64). Results go to stdout and <out-dir>/field-protection.{md,json}; timings are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import signal
import string
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fastavro  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

import data_quality  # noqa: E402
import wire_guard as wg  # noqa: E402
from data_quality import Proxy, Registry, avro_bodies, framed, produce_run  # noqa: E402
from wire_guard import (  # noqa: E402
    BenchError, Budget, cpu_seconds, create_topics, delete_topics, median, scrape)

TARGET_PRODUCE = 0.85
# Protection adds a few hundred bytes per record, and a batch grown past the broker's 1 MiB is
# refused (docs/field-protection.md): every row's producer uses batches of 512 KB.
BATCH_SIZE = 524288


def _producer_conf(bootstrap, errors, compression):
    conf = _base_producer_conf(bootstrap, errors, compression)
    conf["batch.size"] = BATCH_SIZE
    return conf


_base_producer_conf = data_quality.producer_conf
data_quality.producer_conf = _producer_conf
SCHEMA = {
    "type": "record",
    "name": "Customer",
    "namespace": "bench.fields",
    "fields": [
        {"name": "card", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "payload", "type": "string"},
    ],
}
PREFIX = "fp-bench-"
POLICY = """\
# Written by bench/field_protection.py for one run.
topics:
  - id: bench-encrypt
    match: ["%(p)senc-*"]
    value: { schema: required }
    fields:
      - { path: "$.card", action: encrypt, key: "local:bench" }
      - { path: "$.email", action: encrypt, key: "local:bench" }
  - id: bench-tokenize
    match: ["%(p)stok-*"]
    value: { schema: required }
    fields:
      - { path: "$.card", action: tokenize, key: "local:bench-tokens" }
      - { path: "$.email", action: tokenize, key: "local:bench-tokens" }
  - id: bench-sign
    match: ["%(p)ssig-*"]
    sign: { key: "local:bench-tokens", algorithm: hmac-sha256 }
  - id: bench-mask
    match: ["%(p)smask-*"]
    value: { schema: required }
    fields:
      - { path: "$.card", action: mask, keep_last: 4, key: "local:bench" }
      - { path: "$.email", action: mask, keep_last: 4, key: "local:bench" }
""" % {"p": PREFIX}
PRODUCE = ("produce_direct", "produce_passthrough", "produce_encrypt", "produce_tokenize",
           "produce_sign")
CONSUME = ("consume_direct", "consume_passthrough", "consume_masked")
LABELS = {
    "produce_direct": "produce, direct (no proxy)",
    "produce_passthrough": "produce, passthrough (wire-guard, no policy)",
    "produce_encrypt": "produce, two fields encrypted",
    "produce_tokenize": "produce, two fields tokenized",
    "produce_sign": "produce, records signed (HMAC-SHA256)",
    "consume_direct": "consume, direct (no proxy)",
    "consume_passthrough": "consume, passthrough",
    "consume_masked": "consume, two encrypted fields decrypted and masked",
}


def customer(i: int, rng: random.Random) -> dict:
    """Record i before its filler: a 16-digit card, a 20-character email, an amount."""
    return {"card": "".join(rng.choice(string.digits) for _ in range(16)),
            "email": "user%06d@example.com" % i, "amount": rng.randint(1, 10**6), "payload": ""}


def consume_run(bootstrap: str, topic: str, partitions: int, expect: int, timeout: float) -> dict:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fp-bench-%d" % random.getrandbits(32),
                         "enable.auto.commit": False, "log_level": 3,
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 1048576})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got, size, t0 = 0, 0, None
    deadline = time.monotonic() + timeout
    try:
        while got < expect:
            if time.monotonic() > deadline:
                raise BenchError("consume %s: %d of %d records before the deadline" % (topic, got, expect))
            for m in consumer.consume(1000, 0.5):
                if m.error() is not None:
                    continue
                if t0 is None:
                    t0 = time.perf_counter()
                got += 1
                size += len(m.value() or b"")
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
    finally:
        consumer.close()
    return {"records": got, "payload_bytes": size, "seconds": round(elapsed, 4),
            "mb_per_s": size / wg.MB / max(elapsed, 1e-9)}


def one_value(bootstrap: str, topic: str) -> bytes:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fp-bench-peek", "log_level": 3})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                return m.value()
    finally:
        consumer.close()
    raise BenchError("nothing to read in %s" % topic)


def kms_calls(proxy: Proxy) -> float:
    metrics = scrape(proxy.admin_port)
    return sum(v for k, v in metrics.items() if k.startswith("wire_guard_kms_requests_total"))


def fields_protected(proxy: Proxy) -> float:
    metrics = scrape(proxy.admin_port)
    return sum(v for k, v in metrics.items()
               if k.startswith("wire_guard_fields_total") and 'outcome="protected"' in k)


def run_round(args, rnd_no: int, run_id: str, broker: wg.Broker, registry: Registry,
              policy_dir: str, keyring: str, pool_bodies: List[bytes], workdir: str,
              budget: Budget) -> dict:
    topics = {
        "produce_direct": "fp-base-%s-r%d-direct" % (run_id, rnd_no),
        "produce_passthrough": "fp-base-%s-r%d-pass" % (run_id, rnd_no),
        "produce_encrypt": "%senc-%s-r%d" % (PREFIX, run_id, rnd_no),
        "produce_tokenize": "%stok-%s-r%d" % (PREFIX, run_id, rnd_no),
        "produce_sign": "%ssig-%s-r%d" % (PREFIX, run_id, rnd_no),
        "mask": "%smask-%s-r%d" % (PREFIX, run_id, rnd_no),
    }
    create_topics(broker.bootstrap(), list(topics.values()), args.partitions, 60)
    ids = {k: registry.register(t + "-value", SCHEMA) for k, t in topics.items()}
    passthrough = Proxy(args.wire_guard, broker, workdir, "passthrough", [])
    protecting = Proxy(args.wire_guard, broker, workdir, "protecting", [
        "--policies", policy_dir, "--schema-registry-url", registry.url,
        "--kms-local-keyring", keyring])
    out: dict = {"round": rnd_no, "rows": {}}
    try:
        via = {"produce_direct": broker.bootstrap(), "produce_passthrough": passthrough.bootstrap(),
               "produce_encrypt": protecting.bootstrap(), "produce_tokenize": protecting.bootstrap(),
               "produce_sign": protecting.bootstrap()}
        order = list(PRODUCE) if rnd_no % 2 == 0 else list(reversed(PRODUCE))
        calls_before = kms_calls(protecting)
        protected_before = fields_protected(protecting)
        t = lambda cap: min(cap, max(1.0, budget.left()))  # noqa: E731
        proxy_of = {"produce_passthrough": passthrough, "produce_encrypt": protecting,
                    "produce_tokenize": protecting, "produce_sign": protecting,
                    "consume_passthrough": passthrough, "consume_masked": protecting}
        def metered(row: str, run) -> dict:
            """`run()` with the CPU each process spent on it, per record."""
            proxy = proxy_of.get(row)
            before = (cpu_seconds(proxy.pid) if proxy else 0.0, cpu_seconds(broker.pid),
                      time.process_time())
            r = run()
            after = (cpu_seconds(proxy.pid) if proxy else 0.0, cpu_seconds(broker.pid),
                     time.process_time())
            n = max(r["records"], 1)
            if proxy:
                r["proxy_cpu_us_per_record"] = 1e6 * (after[0] - before[0]) / n
            r["broker_cpu_us_per_record"] = 1e6 * (after[1] - before[1]) / n
            r["client_cpu_us_per_record"] = 1e6 * (after[2] - before[2]) / n
            return r

        for row in order:
            pool = framed(ids[row], pool_bodies)
            r = metered(row, lambda: produce_run(via[row], topics[row], args.records, pool,
                                                 pool[:2], "none", t(180.0)))
            out["rows"][row] = r
            print("  round %d %-20s %7.1f MB/s" % (rnd_no, row, r["mb_per_s"]), flush=True)
        out["kms_calls"] = kms_calls(protecting) - calls_before
        out["fields_protected"] = fields_protected(protecting) - protected_before
        # Stored encrypted, for the masked consume row (untimed).
        mask_pool = framed(ids["mask"], pool_bodies)
        produce_run(protecting.bootstrap(), topics["mask"], args.records, mask_pool, mask_pool[:1],
                    "none", t(180.0))
        stored = one_value(broker.bootstrap(), topics["produce_encrypt"])
        record = fastavro.schemaless_reader(io.BytesIO(stored[5:]), fastavro.parse_schema(SCHEMA))
        out["encrypted_card_chars"] = len(record["card"])
        expect = args.records + 2
        reads = {"consume_direct": (broker.bootstrap(), topics["produce_passthrough"], expect),
                 "consume_passthrough": (passthrough.bootstrap(), topics["produce_passthrough"], expect),
                 "consume_masked": (protecting.bootstrap(), topics["mask"], args.records + 1)}
        order = list(CONSUME) if rnd_no % 2 == 0 else list(reversed(CONSUME))
        for row in order:
            bootstrap, topic, n = reads[row]
            r = metered(row, lambda: consume_run(bootstrap, topic, args.partitions, n, t(180.0)))
            out["rows"][row] = r
            print("  round %d %-20s %7.1f MB/s" % (rnd_no, row, r["mb_per_s"]), flush=True)
        out["protecting_vmhwm_kib"] = protecting.vmhwm_kib()
    finally:
        passthrough.stop()
        protecting.stop()
        delete_topics(broker.bootstrap(), list(topics.values()))
    return out


def summarize(rounds: List[dict]) -> dict:
    rows = {}
    for row in PRODUCE + CONSUME:
        base = "produce_passthrough" if row.startswith("produce") else "consume_passthrough"
        direct = "produce_direct" if row.startswith("produce") else "consume_direct"
        mbs = [r["rows"][row]["mb_per_s"] for r in rounds if row in r["rows"]]
        ratios = [r["rows"][row]["mb_per_s"] / r["rows"][base]["mb_per_s"] for r in rounds
                  if row in r["rows"] and base in r["rows"]]
        to_direct = [r["rows"][row]["mb_per_s"] / r["rows"][direct]["mb_per_s"] for r in rounds
                     if row in r["rows"] and direct in r["rows"]]
        def cpu(of: str) -> Optional[float]:
            got = [r["rows"][row][of] for r in rounds if of in r["rows"].get(row, {})]
            return median(got) if got else None

        rows[row] = {"mb_per_s": median(mbs), "vs_passthrough": median(ratios),
                     "proxy_cpu_us_per_record": cpu("proxy_cpu_us_per_record"),
                     "broker_cpu_us_per_record": cpu("broker_cpu_us_per_record"),
                     "client_cpu_us_per_record": cpu("client_cpu_us_per_record"),
                     "vs_passthrough_range": [min(ratios), max(ratios)] if ratios else None,
                     "vs_direct": median(to_direct)}
    calls = sum(r["kms_calls"] for r in rounds)
    fields = sum(r["fields_protected"] for r in rounds)
    # Two fields per record.
    return {"rows": rows, "kms_calls_per_1000_records": 1000.0 * calls / max(fields / 2, 1),
            "kms_calls": calls, "fields_protected": fields,
            "encrypted_card_chars": max(r["encrypted_card_chars"] for r in rounds)}


def render(report: dict) -> str:
    s = report["summary"]
    lines = ["# wire-guard field protection benchmark", "",
             "Command: `%s`. Machine: %s. Tree %s, %s. %d rounds of %d records of %d bytes, %d "
             "partitions; started %s." % (
                 report["command"], report["machine_text"], report["versions"]["tree"],
                 report["versions"]["kafka"], len(report["rounds"]), report["args"]["records"],
                 report["args"]["record_bytes"], report["args"]["partitions"], report["started_at"]),
             "", "CPU µs/record: utime + stime of the row's wire-guard and of the broker "
             "(/proc/<pid>/stat), and the client's process time (librdkafka's threads included), "
             "over the row, per record (warm-up records included), median over rounds.", "",
             "| row | MB/s (median) | vs passthrough (median, range) | vs direct | CPU µs/record: wire-guard, broker, client | target | verdict |",
             "|---|---:|---:|---:|---:|---|---|"]
    for row in PRODUCE + CONSUME:
        e = s["rows"][row]
        target, verdict = "", ""
        if row == "produce_encrypt":
            target = ">= %.2fx passthrough" % TARGET_PRODUCE
            verdict = "met" if e["vs_passthrough"] >= TARGET_PRODUCE else "missed"
        rng = e["vs_passthrough_range"]
        cpu = ", ".join("%.2f" % e[k] if e.get(k) is not None else "—" for k in (
            "proxy_cpu_us_per_record", "broker_cpu_us_per_record", "client_cpu_us_per_record"))
        lines.append("| %s | %.1f | %.3fx (%.3f-%.3f) | %.3fx | %s | %s | %s |" % (
            LABELS[row], e["mb_per_s"], e["vs_passthrough"], rng[0], rng[1], e["vs_direct"],
            cpu, target, verdict))
    kms = s["kms_calls_per_1000_records"]
    lines.append("| KMS calls per 1000 records protected | %.3f (%d calls, %d fields) | | | | < 1 | %s |"
                 % (kms, s["kms_calls"], s["fields_protected"], "met" if kms < 1 else "missed"))
    chars = s["encrypted_card_chars"]
    lines.append("| 16-character field, encrypted, as stored | %d characters | | | | <= 64 | %s |"
                 % (chars, "met" if chars <= 64 else "missed"))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wire-guard", required=True)
    ap.add_argument("--dev-registry", required=True)
    ap.add_argument("--kafka-libs", default=os.environ.get("KAFKA_LIBS"))
    ap.add_argument("--kafka-broker", default=os.path.join(os.path.dirname(HERE), "scripts", "kafka-broker"))
    ap.add_argument("--broker-heap", default="1g")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--budget-s", type=float, default=900.0)
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if not args.kafka_libs:
        ap.error("--kafka-libs or $KAFKA_LIBS is required")

    def on_term(signum, frame):
        raise KeyboardInterrupt("interrupted by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    budget = Budget(args.budget_s)
    machine = wg.machine_info()
    report = {
        "command": os.environ.get("FIELD_PROTECTION_BENCH_COMMAND") or " ".join(sys.argv),
        "machine": machine,
        "machine_text": "%d x %s, %s GiB, kernel %s" % (machine["nproc"], machine["cpu_model"],
                                                          machine["mem_gib"], machine["kernel"]),
        "versions": {"kafka": wg.kafka_version(args.kafka_libs), "tree": wg.git_state()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args),
        "rounds": [],
    }
    print("machine: %s; %s" % (report["machine_text"], report["versions"]["kafka"]), flush=True)
    workdir = tempfile.mkdtemp(prefix="field-protection-bench-")
    policy_dir = os.path.join(workdir, "policies")
    os.makedirs(policy_dir)
    with open(os.path.join(policy_dir, "bench.yaml"), "w") as f:
        f.write(POLICY)
    keyring = os.path.join(workdir, "keyring.yaml")
    fd = os.open(keyring, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("keys:\n")
        for name in ("bench", "bench-tokens"):
            f.write('  %s: "%s"\n' % (name, base64.b64encode(os.urandom(32)).decode()))
    pool = avro_bodies(args.record_bytes, 500, args.seed, SCHEMA, customer)
    run_id = "%x" % random.SystemRandom().getrandbits(32)
    broker: Optional[wg.Broker] = None
    registry: Optional[Registry] = None
    try:
        registry = Registry(args.dev_registry, workdir)
        broker = wg.Broker(args, os.path.join(workdir, "broker"), ["log.segment.delete.delay.ms=1000"])
        print("kafka on %s; warming the broker up (untimed)" % broker.bootstrap(), flush=True)
        warm = ["fp-warm-%s-%d" % (run_id, i) for i in range(3)]
        create_topics(broker.bootstrap(), warm, args.partitions, 60)
        plain = framed(1, pool)
        for t in warm:
            produce_run(broker.bootstrap(), t, args.records, plain, plain[:1], "none", 180.0)
        delete_topics(broker.bootstrap(), warm)
        for rnd_no in range(args.rounds):
            if budget.left() < 120:
                print("stopping after %d rounds: budget" % rnd_no, flush=True)
                break
            rdir = os.path.join(workdir, "round-%d" % rnd_no)
            os.makedirs(rdir)
            report["rounds"].append(run_round(args, rnd_no, run_id, broker, registry, policy_dir,
                                              keyring, pool, rdir, budget))
    finally:
        if broker is not None:
            broker.stop()
        if registry is not None:
            registry.stop()
    report["summary"] = summarize(report["rounds"])
    text = render(report)
    print(text)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "field-protection.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out_dir, "field-protection.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
