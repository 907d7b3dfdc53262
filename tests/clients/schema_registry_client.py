"""confluent-kafka's SchemaRegistryClient through registry-proxy, with OAUTHBEARER tokens.

    schema_registry_client.py --url URL --token-endpoint URL --client-id ID --client-secret S
                              --subject SUBJECT --scenario register|forbidden

Prints one JSON object on its last line. `register` registers a schema, looks it up and reads
it back by id; `forbidden` attempts a registration the policy refuses and reports the error
the client raised.
"""

import argparse
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Payment",
        "namespace": "example.payments",
        "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}],
    }
)


def client(args):
    return SchemaRegistryClient(
        {
            "url": args.url,
            "bearer.auth.credentials.source": "OAUTHBEARER",
            "bearer.auth.client.id": args.client_id,
            "bearer.auth.client.secret": args.client_secret,
            "bearer.auth.scope": "schema_registry",
            "bearer.auth.issuer.endpoint.url": args.token_endpoint,
            # Confluent Cloud routing headers; required by the client, ignored by the proxy.
            "bearer.auth.logical.cluster": "lsrc-dev",
            "bearer.auth.identity.pool.id": "pool-dev",
        }
    )


def register(args):
    sr = client(args)
    schema = Schema(SCHEMA, "AVRO")
    schema_id = sr.register_schema(args.subject, schema)
    looked_up = sr.lookup_schema(args.subject, schema)
    # A fresh client has no cache, so this read goes through the proxy.
    fetched = client(args).get_schema(schema_id)
    latest = sr.get_latest_version(args.subject)
    return {
        "registered_id": schema_id,
        "lookup_id": looked_up.schema_id,
        "lookup_version": looked_up.version,
        "fetched_schema": json.loads(fetched.schema_str),
        "latest_version": latest.version,
        "subjects": sr.get_subjects(),
    }


def forbidden(args):
    try:
        client(args).register_schema(args.subject, Schema(SCHEMA, "AVRO"))
    except SchemaRegistryError as e:
        return {
            "http_status_code": e.http_status_code,
            "error_code": e.error_code,
            "error_message": e.error_message,
            "str": str(e),
        }
    return {"unexpected": "registration succeeded"}


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--url", "--token-endpoint", "--client-id", "--client-secret", "--subject"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--scenario", choices=["register", "forbidden"], required=True)
    args = parser.parse_args()
    result = register(args) if args.scenario == "register" else forbidden(args)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
