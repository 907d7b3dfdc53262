#!/usr/bin/env python3
"""Runs one client scenario against a Kafka endpoint (a broker or the proxy).

    scenario.py --client {confluent,kafka-python,aiokafka} --bootstrap HOST:PORT \
        --scenario {admin,compression,consume-all,groups,idempotent,metadata,
                    produce-payloads,produce-transaction,roundtrip} \
        [--topic-prefix P] [--security-protocol PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL] \
        [--ca-file F] [--sasl-mechanism M --sasl-username U --sasl-password P] \
        [--oauth-token-endpoint URL --oauth-client-id ID --oauth-client-secret S] \
        [--timeout SECONDS]

Scenarios driven by the caller's data (the others make their own topics and records):

  produce-payloads --payloads FILE [--delivery-timeout-ms MS] [--pause-after N --pause-file F]
      Produces every record of FILE, in order, to its explicit partition (acks=all, the
      file's compression, idempotence, max in-flight and linger; retried until the delivery
      timeout, default 60000 ms). FILE is JSON:
        {"topic": "t", "compression": "none|gzip|snappy|lz4|zstd", "idempotent": true,
         "max_in_flight": 5, "linger_ms": 5,
         "records": [{"partition": 0, "key": B64|null, "value": B64|null,
                      "headers": [["k", B64|null], ...]}, ...]}
      Result: "delivered": N and "failed": [{"index": i, "error": "..."}], every record
      accounted for once. A record the cluster refuses is not a scenario failure.
      --pause-after N --pause-file F: after the first N records, flush, then wait until F
      exists before producing the rest.
  produce-transaction --payloads FILE --transactional-id ID (--commit | --abort)
      (confluent only) One transaction with every record of FILE, then commit or abort;
      a failed record or commit aborts it. Result: "committed", "aborted", "failed".
  consume-all --topic T --expect N [--isolation read_committed|read_uncommitted]
      (confluent only) Reads every partition of T from the beginning without a group until
      N records were read and each partition was read to its end, then 1 s more (or the
      deadline passed). Result: "records": [{"partition", "offset", "key", "value",
      "headers", "timestamp"}] sorted by partition and offset, bytes in base64.

--timeout defaults to 60 s, 120 s for produce-payloads and produce-transaction.

On success prints one JSON line to stdout and exits 0. On failure prints the
reason to stderr and exits 1. A watchdog ends the process if the scenario
overruns its time limit, so a caller never waits forever.

Run it with the interpreter of the venv made by scripts/install-stack
($KAFKA_GUARD_PYTHON after `source scripts/stack-env`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    CLIENTS, DELIVERY_TIMEOUT_MS, ISOLATION_LEVELS, RECENT_LOG, SASL_MECHANISMS, SCENARIO_CLIENTS,
    SCENARIOS, SECURITY_PROTOCOLS, Options, ScenarioFailure, capture_client_logs, new_run_id,
)

MODULES = {
    "confluent": "confluent_scenarios",
    "kafka-python": "kafka_python_scenarios",
    "aiokafka": "aiokafka_scenarios",
}

# Extra time past --timeout before the watchdog kills the process; lets the
# scenario's own deadline report a precise reason first.
WATCHDOG_GRACE_S = 15.0

DEFAULT_TIMEOUT_S = 60.0
# Producing waits for the slowest record's delivery timeout (60 s by default).
PRODUCE_TIMEOUT_S = 120.0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--client", required=True, choices=CLIENTS)
    p.add_argument("--bootstrap", required=True, help="HOST:PORT")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--topic-prefix", default="scenario")
    p.add_argument("--security-protocol", default="PLAINTEXT", choices=SECURITY_PROTOCOLS,
                   type=str.upper)
    p.add_argument("--ca-file", help="PEM CA bundle to verify the server certificate")
    p.add_argument("--cert-file", help="PEM client certificate, for servers requiring mutual TLS")
    p.add_argument("--key-file", help="PEM private key for --cert-file")
    p.add_argument("--sasl-mechanism", choices=SASL_MECHANISMS, type=str.upper)
    p.add_argument("--sasl-username")
    p.add_argument("--sasl-password")
    p.add_argument("--oauth-token-endpoint", help="OAUTHBEARER: client_credentials token URL")
    p.add_argument("--oauth-client-id")
    p.add_argument("--oauth-client-secret")
    p.add_argument("--oauth-scope")
    p.add_argument("--timeout", type=float, default=None,
                   help="overall time limit in seconds (default 60; 120 for produce-payloads "
                        "and produce-transaction)")
    p.add_argument("--verbose", action="store_true", help="client library debug logging")
    g = p.add_argument_group("produce-payloads, produce-transaction")
    g.add_argument("--payloads", metavar="FILE", help="JSON file of the records to produce")
    g.add_argument("--delivery-timeout-ms", type=int, default=DELIVERY_TIMEOUT_MS,
                   help="how long a record is retried (default %d)" % DELIVERY_TIMEOUT_MS)
    g.add_argument("--pause-after", type=int, metavar="N",
                   help="after N records, flush and wait for --pause-file")
    g.add_argument("--pause-file", metavar="F", help="file whose creation ends the pause")
    g.add_argument("--transactional-id", metavar="ID")
    end = g.add_mutually_exclusive_group()
    end.add_argument("--commit", dest="end", action="store_const", const="commit",
                     help="commit the transaction")
    end.add_argument("--abort", dest="end", action="store_const", const="abort",
                     help="abort the transaction")
    g = p.add_argument_group("consume-all")
    g.add_argument("--topic", help="topic to read")
    g.add_argument("--expect", type=int, metavar="N", help="records to wait for")
    g.add_argument("--isolation", choices=ISOLATION_LEVELS, default="read_committed")
    a = p.parse_args(argv)

    only = SCENARIO_CLIENTS.get(a.scenario)
    if only and a.client not in only:
        p.error("scenario %s is implemented for --client %s only (and the Java client)"
                % (a.scenario, ", ".join(only)))
    if a.scenario in ("produce-payloads", "produce-transaction") and not a.payloads:
        p.error("%s needs --payloads FILE" % a.scenario)
    if a.scenario == "produce-transaction":
        if not a.transactional_id:
            p.error("produce-transaction needs --transactional-id")
        if a.end is None:
            p.error("produce-transaction needs --commit or --abort")
    if (a.pause_after is None) != (a.pause_file is None):
        p.error("--pause-after and --pause-file go together")
    if a.pause_after is not None and a.pause_after < 0:
        p.error("--pause-after must be >= 0")
    if a.delivery_timeout_ms <= 0:
        p.error("--delivery-timeout-ms must be positive")
    if a.scenario == "consume-all":
        if not a.topic:
            p.error("consume-all needs --topic")
        if a.expect is None or a.expect < 0:
            p.error("consume-all needs --expect N (N >= 0)")
    if a.timeout is None:
        a.timeout = PRODUCE_TIMEOUT_S if a.scenario.startswith("produce-") else DEFAULT_TIMEOUT_S

    if a.security_protocol.startswith("SASL"):
        if not a.sasl_mechanism:
            p.error("--security-protocol %s needs --sasl-mechanism" % a.security_protocol)
        if a.sasl_mechanism == "OAUTHBEARER":
            if not a.oauth_token_endpoint:
                p.error("OAUTHBEARER needs --oauth-token-endpoint")
        elif a.sasl_username is None or a.sasl_password is None:
            p.error("%s needs --sasl-username and --sasl-password" % a.sasl_mechanism)
    if a.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

    return Options(
        client=a.client, bootstrap=a.bootstrap, scenario=a.scenario,
        topic_prefix=a.topic_prefix, security_protocol=a.security_protocol,
        ca_file=a.ca_file, cert_file=a.cert_file, key_file=a.key_file, sasl_mechanism=a.sasl_mechanism,
        sasl_username=a.sasl_username, sasl_password=a.sasl_password,
        oauth_token_endpoint=a.oauth_token_endpoint, oauth_client_id=a.oauth_client_id,
        oauth_client_secret=a.oauth_client_secret, oauth_scope=a.oauth_scope,
        timeout_s=a.timeout, run_id=new_run_id(),
        payloads=a.payloads, delivery_timeout_ms=a.delivery_timeout_ms,
        pause_after=a.pause_after, pause_file=a.pause_file,
        transactional_id=a.transactional_id, commit=a.end != "abort",
        read_topic=a.topic, expect=a.expect or 0, isolation=a.isolation,
    ), a.verbose


def start_watchdog(opts: Options) -> None:
    limit = opts.timeout_s + WATCHDOG_GRACE_S

    def fire():
        sys.stderr.write("FAIL %s/%s: no result after %.0fs; aborting\n"
                         % (opts.client, opts.scenario, limit))
        report_client_log()
        sys.stderr.flush()
        os._exit(1)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()


def report_client_log() -> None:
    if RECENT_LOG.lines:
        sys.stderr.write("  last client warnings/errors:\n")
        for line in RECENT_LOG.lines:
            sys.stderr.write("    %s\n" % line)


def main(argv=None) -> int:
    opts, verbose = parse_args(sys.argv[1:] if argv is None else argv)
    capture_client_logs(("kafka", "aiokafka", "librdkafka"), verbose)
    start_watchdog(opts)
    started = time.monotonic()
    try:
        module = importlib.import_module(MODULES[opts.client])
        details = module.run(opts)
    except ScenarioFailure as e:
        sys.stderr.write("FAIL %s/%s: %s\n" % (opts.client, opts.scenario, e))
        report_client_log()
        return 1
    except Exception as e:
        sys.stderr.write("FAIL %s/%s: unexpected %s: %s\n"
                         % (opts.client, opts.scenario, type(e).__name__, e))
        if verbose:
            traceback.print_exc()
        else:
            sys.stderr.write("".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:]))
        report_client_log()
        return 1
    out = {
        "ok": True,
        "client": opts.client,
        "scenario": opts.scenario,
        "bootstrap": opts.bootstrap,
        "security_protocol": opts.security_protocol,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    out.update(details or {})
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Client libraries may leave non-daemon threads behind after a failure;
    # never let them keep the process alive.
    os._exit(code)
