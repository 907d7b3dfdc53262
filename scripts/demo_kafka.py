"""What the two proxies do for an unchanged Kafka application: the demo's Kafka half.

The application is confluent-kafka's SerializingProducer and DeserializingConsumer with the
stock Avro serializers at their default settings. It changes only `bootstrap.servers`
(wire-guard) and `schema.registry.url` (registry-proxy, with an OAUTHBEARER client).
"""

import argparse
import json
import sys
import time
import urllib.request
import uuid

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer

PAYMENT = json.dumps(
    {
        "type": "record",
        "name": "Payment",
        "namespace": "example.payments",
        "fields": [{"name": "payment", "type": "int"}, {"name": "amount", "type": "long"}],
    }
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--proxy", required=True, help="wire-guard bootstrap address")
    p.add_argument("--broker", required=True, help="the real broker, for the comparison")
    p.add_argument("--metrics", required=True, help="wire-guard's metrics URL")
    p.add_argument("--registry-url", required=True, help="registry-proxy URL")
    p.add_argument("--token-endpoint", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    args = p.parse_args()
    conf = {"bootstrap.servers": args.proxy}
    registry = SchemaRegistryClient(
        {
            "url": args.registry_url,
            "bearer.auth.credentials.source": "OAUTHBEARER",
            "bearer.auth.client.id": args.client_id,
            "bearer.auth.client.secret": args.client_secret,
            "bearer.auth.scope": "schema_registry",
            "bearer.auth.issuer.endpoint.url": args.token_endpoint,
            # Confluent Cloud routing headers; required by the client, ignored by the proxy.
            "bearer.auth.logical.cluster": "lsrc-demo",
            "bearer.auth.identity.pool.id": "pool-demo",
        }
    )

    print("1. The client changes only bootstrap.servers, and sees only the proxy:")
    admin = AdminClient(conf)
    md = admin.list_topics(timeout=10)
    for b in md.brokers.values():
        print(f"   broker {b.id} -> {b.host}:{b.port}   (the real broker is {args.broker}, never shown)")

    topic = f"payments.demo-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(10)
    print(f"\n2. Produce Avro records to {topic} with the stock AvroSerializer (default settings),")
    print(f"   schema.registry.url = registry-proxy as {args.client_id};")
    print("   zstd, headers with a repeated key:")
    producer = SerializingProducer(
        {
            **conf,
            "compression.type": "zstd",
            "enable.idempotence": True,
            "key.serializer": StringSerializer(),
            "value.serializer": AvroSerializer(registry, PAYMENT),
        }
    )
    sent = []
    for i in range(3):
        headers = [("trace", b"a"), ("trace", b"b"), ("source", b"demo")]
        value = {"payment": i, "amount": 10 * (i + 1)}
        producer.produce(topic, key=f"k{i}", value=value, headers=headers)
        sent.append((f"k{i}", value, headers))
    producer.flush(10)
    latest = registry.get_latest_version(f"{topic}-value")
    print(f"   the serializer registered {topic}-value version {latest.version}, schema id {latest.schema_id}")

    consumer = DeserializingConsumer(
        {
            **conf,
            "group.id": "demo",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "key.deserializer": StringDeserializer(),
            "value.deserializer": AvroDeserializer(registry),
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < len(sent) and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value(), m.headers()))
            print(f"   consumed {m.key()} {m.value()} headers={m.headers()}")
    consumer.close()
    ok = got == sent
    print(f"   records read back as written, duplicate headers kept: {ok}")

    print("\n3. What wire-guard counted (wire_guard_requests_total):")
    with urllib.request.urlopen(args.metrics, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("wire_guard_requests_total{") and not line.endswith(" 0"):
                print("   " + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
