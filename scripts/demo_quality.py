"""What wire-guard's data-quality policy does to records: the demo's third part.

policies/data-quality.yaml governs `payments.*` values (bad records go to `dlq.payments`) and
`orders` values (bad records are refused). The schema registered for the demo topic carries a
data-contract rule (`amount > 0`, CEL, onFailure DLQ) that wire-guard enforces at the wire.
Records are produced as raw bytes with a plain Producer, so the demo controls every byte,
including the broken ones.
"""

import argparse
import io
import json
import struct
import sys
import time
import urllib.request
import uuid

import fastavro
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import (
    Rule, RuleKind, RuleMode, RuleParams, RuleSet, Schema, SchemaRegistryClient,
)

PAYMENT = {
    "type": "record",
    "name": "Payment",
    "namespace": "example.payments",
    "fields": [{"name": "payment", "type": "int"}, {"name": "amount", "type": "long"}],
}


def framed(schema_id: int, record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(PAYMENT), record)
    return b"\x00" + struct.pack(">I", schema_id) + out.getvalue()


def produce(conf: dict, topic: str, values) -> list:
    """Produces each value; returns the delivery error text per record (None = delivered)."""
    results = [None] * len(values)
    producer = Producer({**conf, "enable.idempotence": True, "linger.ms": 20})
    for i, v in enumerate(values):
        def report(err, _msg, i=i):
            results[i] = "delivered" if err is None else f"{err.name()}: {err.str()}"
        producer.produce(topic, value=v, on_delivery=report)
    producer.flush(30)
    return results


def read(conf: dict, topic: str, expect: int) -> list:
    consumer = Consumer({**conf, "group.id": f"demo-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.time() + 20
    while len(got) < expect and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    consumer.close()
    return got


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--proxy", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--registry-url", required=True)
    p.add_argument("--token-endpoint", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    args = p.parse_args()
    conf = {"bootstrap.servers": args.proxy}
    registry = SchemaRegistryClient({
        "url": args.registry_url,
        "bearer.auth.credentials.source": "OAUTHBEARER",
        "bearer.auth.client.id": args.client_id,
        "bearer.auth.client.secret": args.client_secret,
        "bearer.auth.scope": "schema_registry",
        "bearer.auth.issuer.endpoint.url": args.token_endpoint,
        "bearer.auth.logical.cluster": "lsrc-demo",
        "bearer.auth.identity.pool.id": "pool-demo",
    })
    admin = AdminClient(conf)
    topic = f"payments.quality-{uuid.uuid4().hex[:6]}"
    for t in admin.create_topics([NewTopic(n, num_partitions=1) for n in (topic, "dlq.payments", "orders")]).values():
        try:
            t.result(10)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    rule = Rule(
        name="amount-positive", doc=None, kind=RuleKind.CONDITION, mode=RuleMode.WRITE, type="CEL",
        tags=None, params=RuleParams({"dlq.topic": "dlq.payments"}), expr="message.amount > 0",
        on_success=None, on_failure="DLQ", disabled=None,
    )
    schema = Schema(json.dumps(PAYMENT), "AVRO", rule_set=RuleSet(migration_rules=None, domain_rules=[rule]))
    schema_id = registry.register_schema(f"{topic}-value", schema)
    print(f"   {topic}-value is schema id {schema_id}, with the data-contract rule "
          "amount-positive: `message.amount > 0`, onFailure DLQ -> dlq.payments")

    values = [
        ("a valid payment", framed(schema_id, {"payment": 1, "amount": 250})),
        ("bytes with no schema framing", b"just some text"),
        ("a payment breaking the rule", framed(schema_id, {"payment": 2, "amount": -5})),
    ]
    print(f"\n   produce to {topic} (the producer hears success for all three):")
    for (label, _), result in zip(values, produce(conf, topic, [v for _, v in values])):
        print(f"   - {label}: {result}")
    landed = read(conf, topic, 1)
    print(f"   {topic} holds {len(landed)} record(s): the valid payment")
    dead = read(conf, "dlq.payments", 2)
    dead = [m for m in dead if dict(m.headers() or []).get("wire-guard.topic") == topic.encode()]
    print(f"   dlq.payments holds {len(dead)} record(s) from it, each with why:")
    for m in dead:
        h = {k: v.decode() for k, v in (m.headers() or []) if k.startswith("wire-guard.")}
        print(f"   - value={m.value()!r}")
        print(f"     reason={h.get('wire-guard.reason')} rule={h.get('wire-guard.rule')} "
              f"message={h.get('wire-guard.message')!r}")

    orders_id = registry.register_schema("orders-value", Schema(json.dumps(PAYMENT), "AVRO"))
    print("\n   produce to orders (on_invalid: reject):")
    # Two produce calls: a refusal fails the whole batch it arrives in, as Kafka's own does.
    results = produce(conf, "orders", [framed(orders_id, {"payment": 3, "amount": 10})])
    results += produce(conf, "orders", [b"\x00\x00\x00\x00\x2a"])
    print(f"   - a valid order: {results[0]}")
    print(f"   - an order with an unknown schema id: {results[1]}")

    print("\n   what wire-guard counted (wire_guard_records_total):")
    with urllib.request.urlopen(args.metrics, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("wire_guard_records_total{"):
                print("   " + line)
    ok = len(landed) == 1 and len(dead) == 2 and results[0] == "delivered" and "INVALID_RECORD" in (results[1] or "")
    print(f"\n   every outcome as the policy says: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
