"""What wire-guard's field protection does to records: the demo's last part.

policies/field-protection.yaml protects three fields of `payments.customers*` values: the card
number is encrypted (only `fraud` reads it), the email tokenized, and every field the schema
tags `PII` (here the phone, tagged with `confluent:tags` as Confluent's data contracts write it)
masked for everyone but `support` and `fraud`. The payments service produces one customer record through wire-guard;
the same record is then read through wire-guard as three principals, and straight from the
broker, bypassing wire-guard.
"""

import argparse
import io
import json
import struct
import uuid

import fastavro
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from demo_quality import read

CUSTOMER = {
    "type": "record",
    "name": "Customer",
    "namespace": "example.payments",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "card", "type": {"type": "record", "name": "Card",
                                  "fields": [{"name": "number", "type": "string"}]}},
        {"name": "email", "type": "string"},
        {"name": "phone", "type": "string", "confluent:tags": ["PII"]},
    ],
}
PARSED = fastavro.parse_schema(CUSTOMER)


def login(user: str) -> dict:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": f"{user}-secret"}


def show(label: str, message) -> None:
    if message is None:
        print(f"   {label:<34} (nothing read)")
        return
    value = message.value()
    record = fastavro.schemaless_reader(io.BytesIO(value[5:]), PARSED)
    print(f"   {label:<34} card={record['card']['number']}")
    print(f"   {'':<34} email={record['email']}")
    print(f"   {'':<34} phone={record['phone']}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--proxy", required=True)
    p.add_argument("--broker", required=True)
    p.add_argument("--registry-url", required=True)
    p.add_argument("--token-endpoint", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    args = p.parse_args()
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
    proxy = {"bootstrap.servers": args.proxy}
    topic = f"payments.customers-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({**proxy, **login("payments")})
    for t in admin.create_topics([NewTopic(topic, num_partitions=1)]).values():
        try:
            t.result(10)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    schema_id = registry.register_schema(f"{topic}-value", Schema(json.dumps(CUSTOMER), "AVRO"))
    customer = {"id": "c-1001", "card": {"number": "4111111111111111"},
                "email": "ada@example.com", "phone": "+44 7700 900123"}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PARSED, customer)
    value = b"\x00" + struct.pack(">I", schema_id) + out.getvalue()

    print(f"   payments produces to {topic} through wire-guard:")
    print(f"   card={customer['card']['number']} email={customer['email']} phone={customer['phone']}")
    producer = Producer({**proxy, **login("payments"), "enable.idempotence": True})
    result = {}
    producer.produce(topic, value=value, on_delivery=lambda err, _m: result.update(err=err))
    producer.flush(30)
    print(f"   -> {'delivered' if result.get('err') is None else result['err']}\n")

    for user, why in [("fraud", "in reveal_to of card and of PII-tagged fields"),
                      ("support", "in reveal_to of PII-tagged fields only"),
                      ("analyst", "in no reveal_to")]:
        got = read({**proxy, **login(user)}, topic, 1)
        show(f"read through wire-guard as {user}:", got[0] if got else None)
        print(f"   {'':<34} ({why})")
    got = read({"bootstrap.servers": args.broker}, topic, 1)
    show("read straight from the broker:", got[0] if got else None)
    if got:
        keys = [k for k, _ in (got[0].headers() or []) if k == "wire-guard.key"]
        print(f"   {'':<34} ({len(keys)} wire-guard.key headers carry the wrapped data keys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
