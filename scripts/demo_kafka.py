"""What wire-guard does for an unchanged Kafka client: the demo's Kafka half."""

import argparse
import sys
import time
import urllib.request
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--proxy", required=True)
    p.add_argument("--broker", required=True)
    p.add_argument("--metrics", required=True)
    args = p.parse_args()
    conf = {"bootstrap.servers": args.proxy}

    print("1. The client changes only bootstrap.servers, and sees only the proxy:")
    admin = AdminClient(conf)
    md = admin.list_topics(timeout=10)
    for b in md.brokers.values():
        print(f"   broker {b.id} -> {b.host}:{b.port}   (the real broker is {args.broker}, never shown)")

    topic = f"demo.payments.{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(10)
    print(f"\n2. Produce through the proxy to {topic} (zstd, headers with a repeated key):")
    producer = Producer({**conf, "compression.type": "zstd", "enable.idempotence": True})
    sent = []
    for i in range(3):
        headers = [("trace", b"a"), ("trace", b"b"), ("source", b"demo")]
        value = f'{{"payment": {i}, "amount": {10 * (i + 1)}}}'.encode()
        producer.produce(topic, key=f"k{i}".encode(), value=value, headers=headers)
        sent.append((f"k{i}".encode(), value, headers))
    producer.flush(10)

    consumer = Consumer({**conf, "group.id": "demo", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + 20
    while len(got) < len(sent) and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value(), m.headers()))
            print(f"   consumed {m.key().decode()} {m.value().decode()} headers={m.headers()}")
    consumer.close()
    ok = got == sent
    print(f"   byte-identical round trip, duplicate headers kept: {ok}")

    print("\n3. What the proxy counted (wire_guard_requests_total):")
    with urllib.request.urlopen(args.metrics, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("wire_guard_requests_total{") and not line.endswith(" 0"):
                print("   " + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
