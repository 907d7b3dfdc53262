"""confluent-kafka's stock serializers through registry-proxy and wire-guard.

    serializer_scenarios.py --registry-url URL --token-endpoint URL
                            --client-id ID --client-secret S --bootstrap HOST:PORT
                            --topic TOPIC --format avro|json|protobuf
                            [--serializer-conf JSON] [--preregister]
                            --scenario roundtrip|refused

The serializers and deserializers are used exactly as an application would: a
SerializingProducer and a DeserializingConsumer, `schema.registry.url` pointed at the
proxy with OAUTHBEARER credentials and `bootstrap.servers` at wire-guard, and the
serializer's default settings unless --serializer-conf overrides some (for example
`{"auto.register.schemas": false, "use.latest.version": true}`). With the defaults,
confluent-kafka 2.16 first asks the registry for the topic's associations and falls back
to the topic name strategy on a 404.

`roundtrip` produces records and reads them back, and reports what was read; with
--preregister the schema is registered first through the registry client (for
serializers that must not register). `refused` produces one record and reports the error
the serializer raised (and that nothing was written).

Prints one JSON object on its last line.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import StringDeserializer, StringSerializer

AVRO_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Payment",
        "namespace": "example.payments",
        "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}],
    }
)

JSON_SCHEMA = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Payment",
        "type": "object",
        "properties": {"id": {"type": "string"}, "amount": {"type": "integer"}},
        "required": ["id", "amount"],
        "additionalProperties": False,
    }
)

RECORDS = [{"id": f"p-{i}", "amount": 100 * i + 7} for i in range(5)]


def registry_conf(args):
    return {
        "url": args.registry_url,
        "bearer.auth.credentials.source": "OAUTHBEARER",
        "bearer.auth.client.id": args.client_id,
        "bearer.auth.client.secret": args.client_secret,
        "bearer.auth.scope": "schema_registry",
        "bearer.auth.issuer.endpoint.url": args.token_endpoint,
        # Confluent Cloud routing headers; required by the client, ignored by the proxy.
        "bearer.auth.logical.cluster": "lsrc-dev",
        "bearer.auth.identity.pool.id": "pool-dev",
    }


def protobuf_payment():
    """A generated-code equivalent for `message Payment { string id = 1; int64 amount = 2; }`,
    built at run time so that no protoc is needed."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="example/payments/payment.proto", package="example.payments", syntax="proto3"
    )
    message = fdp.message_type.add(name="Payment")
    f = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="id", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    message.field.add(name="amount", number=2, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("example.payments.Payment"))


def serdes(args, sr):
    """(serializer, deserializer, to_wire, from_wire, schema to preregister) for the format."""
    conf = json.loads(args.serializer_conf) if args.serializer_conf else None
    if args.format == "avro":
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

        return (
            AvroSerializer(sr, AVRO_SCHEMA, conf=conf),
            AvroDeserializer(sr),
            dict,
            dict,
            Schema(AVRO_SCHEMA, "AVRO"),
        )
    if args.format == "json":
        from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer

        return (
            JSONSerializer(JSON_SCHEMA, sr, conf=conf),
            JSONDeserializer(None, schema_registry_client=sr),
            dict,
            dict,
            Schema(JSON_SCHEMA, "JSON"),
        )
    from confluent_kafka.schema_registry.common.protobuf import _schema_to_str
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer

    payment = protobuf_payment()
    return (
        ProtobufSerializer(payment, sr, conf=conf),
        ProtobufDeserializer(payment, {"use.deprecated.format": False}),
        lambda r: payment(**r),
        lambda m: {"id": m.id, "amount": m.amount},
        Schema(_schema_to_str(payment.DESCRIPTOR.file), "PROTOBUF"),
    )


def producer(args, serializer):
    return SerializingProducer(
        {
            "bootstrap.servers": args.bootstrap,
            "key.serializer": StringSerializer(),
            "value.serializer": serializer,
            "enable.idempotence": True,
        }
    )


def roundtrip(args):
    sr = SchemaRegistryClient(registry_conf(args))
    serializer, deserializer, to_wire, from_wire, schema = serdes(args, sr)
    subject = f"{args.topic}-value"
    preregistered = None
    if args.preregister:
        preregistered = sr.register_schema(subject, schema)
    p = producer(args, serializer)
    for r in RECORDS:
        p.produce(args.topic, key=r["id"], value=to_wire(r))
    remaining = p.flush(30)
    if remaining:
        raise SystemExit(f"{remaining} records not delivered")

    # A consumer with a registry client of its own: its reads by id go through the proxy.
    reader = SchemaRegistryClient(registry_conf(args))
    _, deserializer, _, _, _ = serdes(args, reader)
    c = DeserializingConsumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"serializers-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "key.deserializer": StringDeserializer(),
            "value.deserializer": deserializer,
        }
    )
    c.subscribe([args.topic])
    got = []
    deadline = time.time() + 60
    while len(got) < len(RECORDS) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise SystemExit(f"consume failed: {m.error()}")
        got.append(from_wire(m.value()))
    c.close()
    latest = sr.get_latest_version(subject)
    return {
        "format": args.format,
        "subject": subject,
        "sent": RECORDS,
        "received": got,
        "round_trip": got == RECORDS,
        "latest_version": latest.version,
        "schema_id": latest.schema_id,
        "preregistered_id": preregistered,
    }


def refused(args):
    sr = SchemaRegistryClient(registry_conf(args))
    serializer, _, to_wire, _, _ = serdes(args, sr)
    p = producer(args, serializer)
    try:
        p.produce(args.topic, key="x", value=to_wire(RECORDS[0]))
    except Exception as e:  # the serializer's error, as the application sees it
        cause = e
        while cause is not None and not isinstance(cause, SchemaRegistryError):
            cause = cause.__cause__ or cause.__context__
        return {
            "raised": type(e).__name__,
            "str": str(e),
            "http_status_code": getattr(cause, "http_status_code", None),
            "error_code": getattr(cause, "error_code", None),
            "undelivered": p.flush(10),
        }
    p.flush(10)
    return {"unexpected": "the record was produced"}


def main():
    parser = argparse.ArgumentParser()
    for flag in (
        "--registry-url",
        "--token-endpoint",
        "--client-id",
        "--client-secret",
        "--bootstrap",
        "--topic",
    ):
        parser.add_argument(flag, required=True)
    parser.add_argument("--format", choices=["avro", "json", "protobuf"], required=True)
    parser.add_argument("--serializer-conf")
    parser.add_argument("--preregister", action="store_true")
    parser.add_argument("--scenario", choices=["roundtrip", "refused"], required=True)
    args = parser.parse_args()
    result = roundtrip(args) if args.scenario == "roundtrip" else refused(args)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
