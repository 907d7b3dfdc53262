#!/usr/bin/env python3
"""Throughput, latency and cost of wire-guard in front of a Tansu broker.

One run starts a Tansu broker (in-memory storage) and a wire-guard release
binary in front of it, then drives the same confluent-kafka (librdkafka)
producer and consumer once directly against the broker and once through the
proxy, per round, each round on a freshly started broker and proxy. The order
alternates between rounds (direct first in even rounds, proxied first in odd
ones) so drift within a round hits both sides alike; every reported figure is
the median over the rounds.

Per round and side:

* produce throughput: fixed-seed random 1 KiB values, linger.ms=5,
  acks=all, no compression; timed from the first produce() call to the last
  delivery callback (connections are opened by an untimed warm-up record);
* consume throughput: assign() to partition 0 from offset 0 (no group join),
  timed from the first record to the last expected one; the record count comes
  from reading, not from the high watermark;
* produce latency: a fixed rate (default 1000 records/s for 10 s, linger.ms=0),
  latency = delivery callback time - produce() call time.

For the proxied side the harness also samples wire-guard's CPU time from
/proc/<pid>/stat and its wire_guard_bytes_total counters from /metrics, and
reports CPU seconds per GB forwarded (frame bytes, both directions, from the
counters) and per GB of record values moved, plus peak RSS (VmHWM).

Results go to stdout as markdown and to <out-dir>/wire-guard.{md,json}.
Only 127.0.0.1 is used. Timings are reported against the targets, never
asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List, Optional

from confluent_kafka import (
    Consumer, KafkaError, KafkaException, Producer, TopicPartition, libversion, version,
)
from confluent_kafka.admin import AdminClient, NewTopic

HOST = "127.0.0.1"
TANSU_NODE_ID = 111
MB = 1_000_000
GB = 1_000_000_000

# A phase counts as undisturbed when other processes used less CPU than this (cores).
QUIET_OTHER_CORES = 0.15

# Targets the results are reported against (not asserted).
TARGET_THROUGHPUT_RATIO = 0.95
TARGET_ADDED_P99_MS = 1.0

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The run cannot go on (a process died, a deadline passed, records went missing)."""


class Budget:
    """Wall-clock budget of the whole run."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.end = self.start + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise BenchError("time budget exhausted during %s" % what)


# --- processes -------------------------------------------------------------


def _die_with_parent() -> None:
    """Child pre-exec hook: receive SIGKILL if the harness dies without cleaning up."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, name: str, log: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError("%s exited with %s before listening; log tail:\n%s"
                             % (name, proc.returncode, tail(log)))
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError("%s did not listen on %s:%d within %.0f s; log tail:\n%s"
                     % (name, HOST, port, timeout, tail(log)))


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


class Managed:
    """A child process that is always stopped: TERM, then KILL after a grace period."""

    def __init__(self, name: str, argv: List[str], log: str, env: Optional[dict] = None):
        self.name = name
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            env=env, preexec_fn=_die_with_parent,
            # Own process group: a terminal's Ctrl-C or `timeout` reaches only the harness,
            # which then stops the children in order.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError("%s exited with %s; log tail:\n%s"
                             % (self.name, self.proc.returncode, tail(self.log)))

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def machine_cpu() -> Dict[str, float]:
    """Machine-wide busy and steal CPU seconds so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return {"busy": (user + nice + system + irq + softirq) / CLK_TCK, "steal": steal / CLK_TCK}


def wait_for_quiet(max_wait: float, threshold_cores: float) -> dict:
    """Waits (bounded) until the machine is nearly idle, so other work skews less."""
    start = time.monotonic()
    while True:
        a = machine_cpu()
        time.sleep(1.0)
        b = machine_cpu()
        busy = b["busy"] - a["busy"]
        waited = time.monotonic() - start
        if busy <= threshold_cores or waited >= max_wait:
            return {"waited_s": round(waited, 1), "busy_cores_at_start": round(busy, 2),
                    "quiet": busy <= threshold_cores}
        print("machine busy (%.2f cores used by other work); waiting" % busy, flush=True)
        time.sleep(4.0)


def proc_status_kib(pid: int, key: str) -> Optional[int]:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


_BYTES_RE = re.compile(r'^wire_guard_bytes_total\{direction="([a-z_]+)"\}\s+([0-9.e+]+)\s*$', re.M)
_REQUESTS_RE = re.compile(r'^wire_guard_requests_total\{api="[A-Za-z_]+"\}\s+([0-9.e+]+)\s*$', re.M)


def proxy_counters(admin_port: int) -> Dict[str, int]:
    """wire_guard_bytes_total by direction and the sum of wire_guard_requests_total."""
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, admin_port), timeout=5) as r:
        text = r.read().decode()
    counters = {d: int(float(v)) for d, v in _BYTES_RE.findall(text)}
    counters["requests"] = sum(int(float(v)) for v in _REQUESTS_RE.findall(text))
    return counters


class Meter:
    """wire-guard and broker CPU plus wire-guard's byte counters around one phase."""

    def __init__(self, stack: "Stack"):
        self.stack = stack

    def __enter__(self) -> "Meter":
        s = self.stack
        self.t0 = time.monotonic()
        self.proxy_cpu0 = cpu_seconds(s.proxy.pid)
        self.broker_cpu0 = cpu_seconds(s.broker.pid)
        # This process: Python plus librdkafka's threads.
        self.client_cpu0 = time.process_time()
        self.machine0 = machine_cpu()
        self.counters0 = proxy_counters(s.admin_port)
        return self

    def __exit__(self, *exc) -> None:
        s = self.stack
        self.wall_s = time.monotonic() - self.t0
        self.client_cpu_s = time.process_time() - self.client_cpu0
        self.proxy_cpu_s = cpu_seconds(s.proxy.pid) - self.proxy_cpu0
        self.broker_cpu_s = cpu_seconds(s.broker.pid) - self.broker_cpu0
        m1 = machine_cpu()
        self.steal_s = m1["steal"] - self.machine0["steal"]
        # CPU used by processes outside this benchmark (other work on the box).
        self.other_cpu_s = max(0.0, m1["busy"] - self.machine0["busy"] - self.client_cpu_s
                               - self.broker_cpu_s - self.proxy_cpu_s)
        c1 = proxy_counters(s.admin_port)
        delta = {k: c1.get(k, 0) - self.counters0.get(k, 0) for k in c1}
        self.proxy_requests = delta.pop("requests", 0)
        self.proxy_bytes = delta

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 3),
            "proxy_cpu_s": round(self.proxy_cpu_s, 3),
            "broker_cpu_s": round(self.broker_cpu_s, 3),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "other_cpu_s": round(self.other_cpu_s, 3),
            "steal_s": round(self.steal_s, 3),
            "proxy_bytes": self.proxy_bytes,
            "proxy_requests": self.proxy_requests,
        }


class Stack:
    """Tansu plus wire-guard on free loopback ports."""

    def __init__(self, tansu: str, wire_guard: str, workdir: str):
        self.broker_port = free_port()
        url = "tcp://%s:%d" % (HOST, self.broker_port)
        self.broker = Managed("tansu", [
            tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ], os.path.join(workdir, "tansu.log"))
        self.proxy: Optional[Managed] = None
        wait_for_port(self.broker_port, self.broker.proc, "tansu", self.broker.log, 30)

        self.listen_port = free_port()
        self.admin_port = free_port()
        # Node 111's proxy port must be one that was just free.
        while True:
            node_port = free_port()
            if node_port > TANSU_NODE_ID and node_port not in (self.listen_port, self.admin_port):
                break
        self.node_port = node_port
        self.broker_port_base = node_port - TANSU_NODE_ID
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proxy = Managed("wire-guard", [
            wire_guard,
            "--upstream", "%s:%d" % (HOST, self.broker_port),
            "--listen", "%s:%d" % (HOST, self.listen_port),
            "--broker-port-base", str(self.broker_port_base),
            "--admin-listen", "%s:%d" % (HOST, self.admin_port),
            "--drain-timeout-secs", "2",
            "--log-format", "json",
        ], os.path.join(workdir, "wire-guard.log"), env=env)
        wait_for_port(self.listen_port, self.proxy.proc, "wire-guard", self.proxy.log, 20)
        wait_for_port(self.admin_port, self.proxy.proc, "wire-guard", self.proxy.log, 20)

    def bootstrap(self, side: str) -> str:
        port = self.broker_port if side == "direct" else self.listen_port
        return "%s:%d" % (HOST, port)

    def check_alive(self) -> None:
        self.broker.check_alive()
        if self.proxy:
            self.proxy.check_alive()

    def stop(self) -> None:
        # The proxy first, so it never sees its upstream vanish mid-request.
        for p in (self.proxy, self.broker):
            if p is not None:
                try:
                    p.stop()
                except Exception as e:  # keep stopping the others
                    print("warning: stopping %s: %s" % (p.name, e), file=sys.stderr)


# --- clients ---------------------------------------------------------------


class ClientErrors:
    """Errors librdkafka reports through error_cb (connection trouble and the like)."""

    def __init__(self):
        self.seen: List[str] = []

    def __call__(self, err: KafkaError) -> None:
        if len(self.seen) < 50:
            self.seen.append(err.str())
        if err.fatal():
            raise KafkaException(err)


def base_conf(bootstrap: str, errors: ClientErrors, client_id: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "error_cb": errors,
        "socket.timeout.ms": 10000,
        # librdkafka re-resolves and reconnects on its own; keep the benchmark quiet.
        "log_level": 3,
    }


def create_topics(bootstrap: str, names: List[str], partitions: int, timeout: float) -> None:
    errors = ClientErrors()
    admin = AdminClient(base_conf(bootstrap, errors, "bench-admin"))
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        operation_timeout=timeout, request_timeout=timeout)
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BenchError("creating topic %s: %s" % (name, e))
    # Wait until every topic shows up with a leader.
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=5)
        ready = [n for n in names
                 if n in md.topics and md.topics[n].error is None
                 and len(md.topics[n].partitions) == partitions
                 and all(p.leader >= 0 for p in md.topics[n].partitions.values())]
        if len(ready) == len(names):
            return
        if time.monotonic() > deadline:
            raise BenchError("topics not ready: %s" % sorted(set(names) - set(ready)))
        time.sleep(0.2)


def value_pool(record_bytes: int, seed: int, count: int = 512) -> List[bytes]:
    """Fixed-seed random values; cycling through a pool keeps Python's memory small."""
    rng = random.Random(seed)
    return [rng.randbytes(record_bytes) for _ in range(count)]


def warm_up(producer: Producer, topic: str, value: bytes, count: int, timeout: float) -> None:
    """Opens the producer's connections and learns the leader before anything is timed."""
    for _ in range(count):
        producer.produce(topic, value)
    left = producer.flush(timeout)
    if left:
        raise BenchError("warm-up: %d records to %s undelivered after %.0f s" % (left, topic, timeout))


def produce_throughput(bootstrap: str, topic: str, records: int, pool: List[bytes],
                       timeout: float) -> dict:
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

    conf = base_conf(bootstrap, errors, "bench-producer")
    conf.update({"linger.ms": 5, "acks": "all", "compression.type": "none"})
    producer = Producer(conf)
    try:
        warm_up(producer, topic, pool[0], 1, min(30.0, timeout))
        conf_cb = on_delivery
        n_pool = len(pool)
        produce = producer.produce
        poll = producer.poll
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter()
        i = 0
        while i < records:
            try:
                produce(topic, pool[i % n_pool], on_delivery=conf_cb)
                i += 1
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                poll(0.001)
                if time.monotonic() > deadline:
                    raise BenchError("produce to %s: timed out with a full queue" % topic)
            if i % 1000 == 0:
                poll(0)
        while state["delivered"] + state["failed"] < records:
            poll(0.05)
            if time.monotonic() > deadline:
                raise BenchError("produce to %s: %d of %d delivered before the deadline; "
                                 "client errors: %s" % (topic, state["delivered"], records,
                                                        errors.seen[-3:]))
        elapsed = state["last"] - t0
    finally:
        producer.flush(5)
    if state["failed"]:
        raise BenchError("produce to %s: %d records failed (%s)"
                         % (topic, state["failed"], state["first_error"]))
    payload = records * len(pool[0])
    return {
        "records": records,
        "payload_bytes": payload,
        "seconds": round(elapsed, 4),
        "mb_per_s": payload / MB / elapsed,
        "client_errors": errors.seen,
    }


def consume_throughput(bootstrap: str, topic: str, expected: int, timeout: float,
                       quiet_s: float) -> dict:
    """Reads partition 0 of `topic` from offset 0 until `expected` records arrived.

    Records reach the application in batches, so the clock starts when the first batch is
    handed over and only the bytes of later batches count: throughput = bytes after the first
    batch / (time of the last expected record - time of the first batch). The partition is
    then read on until quiet for `quiet_s` (untimed), so extra records would be noticed.
    """
    errors = ClientErrors()
    conf = base_conf(bootstrap, errors, "bench-consumer")
    conf.update({
        # Required by the client, but assign() never joins the group.
        "group.id": "bench-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    })
    consumer = Consumer(conf)
    count = 0
    payload = 0
    timed_bytes = 0
    t_first = t_last = None
    extra = 0
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while count < expected:
            msgs = consumer.consume(num_messages=1000, timeout=0.2)
            now = time.perf_counter()
            got = 0
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BenchError("consume %s: %s" % (topic, err.str()))
                count += 1
                got += len(m.value())
            payload += got
            if got:
                if t_first is None:
                    t_first = now
                else:
                    timed_bytes += got
            if count >= expected:
                t_last = now
                break
            if time.monotonic() > deadline:
                raise BenchError("consume %s: %d of %d records before the deadline; "
                                 "client errors: %s" % (topic, count, expected, errors.seen[-3:]))
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            msgs = [m for m in consumer.consume(num_messages=1000, timeout=0.1) if m.error() is None]
            if msgs:
                extra += len(msgs)
                quiet_until = time.monotonic() + quiet_s
    finally:
        consumer.close()
    elapsed = (t_last - t_first) if t_first is not None and t_last is not None else 0.0
    return {
        "records": count,
        "extra_records": extra,
        "payload_bytes": payload,
        "timed_bytes": timed_bytes,
        "seconds": round(elapsed, 4),
        "mb_per_s": timed_bytes / MB / elapsed if elapsed > 0 and timed_bytes else None,
        "client_errors": errors.seen,
    }


def percentile(sorted_values: List[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def produce_latency(bootstrap: str, topic: str, rate: float, seconds: float, pool: List[bytes],
                    timeout: float) -> dict:
    """Produces at a fixed rate; latency = delivery callback time - produce() call time."""
    errors = ClientErrors()
    latencies: List[float] = []
    rd_latencies: List[float] = []
    failed = []

    def on_delivery(sent_at, err, msg):
        now = time.perf_counter()
        if err is not None:
            failed.append(err.str())
            return
        latencies.append(now - sent_at)
        lat = msg.latency()
        if lat is not None:
            rd_latencies.append(lat)

    conf = base_conf(bootstrap, errors, "bench-latency")
    conf.update({"linger.ms": 0, "acks": "all", "compression.type": "none"})
    producer = Producer(conf)
    total = int(rate * seconds)
    behind = 0
    try:
        warm_up(producer, topic, pool[0], 20, min(30.0, timeout))
        n_pool = len(pool)
        interval = 1.0 / rate
        t0 = time.perf_counter()
        for i in range(total):
            due = t0 + i * interval
            while True:
                left = due - time.perf_counter()
                if left <= 0:
                    break
                if left > 0.0015:
                    # Serves delivery callbacks as they arrive while waiting.
                    producer.poll(left - 0.001)
                else:
                    time.sleep(left)
            if time.perf_counter() - due > interval:
                behind += 1
            sent_at = time.perf_counter()
            producer.produce(topic, pool[i % n_pool],
                             on_delivery=lambda err, msg, s=sent_at: on_delivery(s, err, msg))
            producer.poll(0)
        deadline = time.monotonic() + timeout
        while len(latencies) + len(failed) < total:
            producer.poll(0.05)
            if time.monotonic() > deadline:
                raise BenchError("latency run on %s: %d of %d delivered before the deadline"
                                 % (topic, len(latencies), total))
        achieved_rate = total / (time.perf_counter() - t0)
    finally:
        producer.flush(5)
    if failed:
        raise BenchError("latency run on %s: %d records failed (%s)" % (topic, len(failed), failed[0]))
    lat = sorted(x * 1000 for x in latencies)
    rd = sorted(x * 1000 for x in rd_latencies)
    return {
        "records": total,
        "target_rate": rate,
        "achieved_rate": round(achieved_rate, 1),
        "sent_late": behind,
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1],
        "mean_ms": statistics.fmean(lat),
        "librdkafka_p50_ms": percentile(rd, 50),
        "librdkafka_p99_ms": percentile(rd, 99),
        "client_errors": errors.seen,
    }


# --- the run ---------------------------------------------------------------


def run_side(stack: Stack, side: str, rnd: int, args, pool: List[bytes], budget: Budget,
             topics: Dict[str, str], rounds: List[dict]) -> None:
    """Runs the three phases for one side; partial results stay in `rounds` on failure."""
    bootstrap = stack.bootstrap(side)
    out: dict = {"round": rnd, "side": side}
    rounds.append(out)
    phases: List[tuple] = [
        ("produce", lambda: produce_throughput(
            bootstrap, topics["tput"], args.records, pool, min(120.0, budget.left()))),
        ("consume", lambda: consume_throughput(
            bootstrap, topics["tput"], args.records + 1, min(120.0, budget.left()), args.quiet_s)),
        ("latency", lambda: produce_latency(
            bootstrap, topics["lat"], args.latency_rate, args.latency_seconds, pool,
            min(60.0, budget.left()))),
    ]
    for name, fn in phases:
        budget.check("%s %s round %d" % (name, side, rnd))
        stack.check_alive()
        with Meter(stack) as meter:
            result = fn()
        stack.check_alive()
        result["meter"] = meter.as_dict()
        out[name] = result
        brief = ("%s MB/s" % fmt(result["mb_per_s"])) if "mb_per_s" in result else (
            "p50 %.3f ms p99 %.3f ms" % (result["p50_ms"], result["p99_ms"]))
        print("  round %d %-7s %-7s %-26s cpu s: wire-guard %.2f, broker %.2f, client %.2f, "
              "other %.2f; wall %.2f s"
              % (rnd, side, name, brief, meter.proxy_cpu_s, meter.broker_cpu_s,
                 meter.client_cpu_s, meter.other_cpu_s, meter.wall_s), flush=True)


def median(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def other_cores(result: dict) -> float:
    m = result["meter"]
    return m["other_cpu_s"] / m["wall_s"] if m["wall_s"] else 0.0


def summarize(rounds: List[dict], stack_info: dict) -> dict:
    by_side = {s: [r for r in rounds if r["side"] == s] for s in ("direct", "proxied")}

    def med(side: str, phase: str, key: str) -> Optional[float]:
        return median([r[phase][key] for r in by_side[side] if phase in r])

    summary: dict = {}
    for key, phase, field in (
        ("produce_mb_per_s", "produce", "mb_per_s"),
        ("consume_mb_per_s", "consume", "mb_per_s"),
        ("produce_latency_p50_ms", "latency", "p50_ms"),
        ("produce_latency_p99_ms", "latency", "p99_ms"),
    ):
        d, p = med("direct", phase, field), med("proxied", phase, field)
        entry: dict = {"direct": d, "proxied": p}
        for side in ("direct", "proxied"):
            vals = [r[phase][field] for r in by_side[side] if phase in r and r[phase][field] is not None]
            entry[side + "_range"] = [min(vals), max(vals)] if vals else None
        # Within-round comparison, less exposed to drift between rounds; "quiet" pairs are those
        # where other work on the machine stayed under QUIET_OTHER_CORES during both phases.
        paired = []
        quiet_pairs = []
        for rd in by_side["direct"]:
            rp = next((r for r in by_side["proxied"] if r["round"] == rd["round"]), None)
            if rp is None or rd[phase][field] is None or rp[phase][field] is None:
                continue
            if key.endswith("_ms"):
                v = rp[phase][field] - rd[phase][field]
            elif rd[phase][field]:
                v = rp[phase][field] / rd[phase][field]
            else:
                continue
            paired.append(v)
            if max(other_cores(rd[phase]), other_cores(rp[phase])) < QUIET_OTHER_CORES:
                quiet_pairs.append(v)
        entry["quiet_pairs"] = len(quiet_pairs)
        if d is not None and p is not None:
            if key.endswith("_ms"):
                entry["delta_ms"] = p - d
                entry["paired_delta_ms_median"] = median(paired)
                entry["quiet_paired_delta_ms_median"] = median(quiet_pairs)
            else:
                entry["ratio"] = p / d if d else None
                entry["paired_ratio_median"] = median(paired)
                entry["quiet_paired_ratio_median"] = median(quiet_pairs)
        summary[key] = entry

    # wire-guard cost: over every proxied phase, and over the bulk (throughput) phases alone,
    # where per-request overhead is spread over large batches.
    for label, phases in (("all", ("produce", "consume", "latency")), ("bulk", ("produce", "consume")),
                          ("latency", ("latency",))):
        cpu = 0.0
        wire = 0
        payload = 0
        for r in by_side["proxied"]:
            for phase in phases:
                if phase not in r:
                    continue
                m = r[phase]["meter"]
                cpu += m["proxy_cpu_s"]
                wire += sum(m["proxy_bytes"].values())
                if phase == "latency":
                    payload += r[phase]["records"] * stack_info["record_bytes"]
                else:
                    payload += r[phase]["payload_bytes"]
        requests = sum(r[ph]["meter"]["proxy_requests"] for r in by_side["proxied"]
                       for ph in phases if ph in r)
        summary["proxy_cost_" + label] = {
            "requests": requests,
            "cpu_us_per_request": cpu / requests * 1e6 if requests else None,
            "cpu_s": cpu,
            "wire_bytes": wire,
            "payload_bytes": payload,
            "cpu_s_per_gb_wire": cpu / (wire / GB) if wire else None,
            "cpu_s_per_gb_payload": cpu / (payload / GB) if payload else None,
        }

    # How busy the box was: CPU seconds of client + broker + proxy per wall second, per phase.
    busy: dict = {}
    for side in ("direct", "proxied"):
        for phase in ("produce", "consume", "latency"):
            vals = []
            for r in by_side[side]:
                if phase in r:
                    m = r[phase]["meter"]
                    used = m["client_cpu_s"] + m["broker_cpu_s"] + (m["proxy_cpu_s"] if side == "proxied" else 0)
                    vals.append(used / m["wall_s"] if m["wall_s"] else None)
            busy.setdefault(phase, {})[side] = median(vals)
    summary["cores_busy"] = busy
    other = [r[ph]["meter"]["other_cpu_s"] / r[ph]["meter"]["wall_s"]
             for r in rounds for ph in ("produce", "consume", "latency")
             if ph in r and r[ph]["meter"]["wall_s"]]
    summary["other_cores_busy"] = {"median": median(other), "max": max(other) if other else None}
    return summary


def loadavg() -> Optional[List[float]]:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def machine_info() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=5).stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        nproc = len(os.sched_getaffinity(0))
    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": nproc,
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "python": platform.python_version(),
        "confluent_kafka": v if isinstance((v := version()), str) else v[0],
        "librdkafka": libversion()[0],
    }


def tool_version(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def fmt(v: Optional[float], digits: int = 1) -> str:
    return "n/a" if v is None else "%.*f" % (digits, v)


def render_markdown(report: dict) -> str:
    s = report["summary"]
    m = report["machine"]
    p = report["parameters"]
    lines = []
    lines.append("# wire-guard passthrough benchmark")
    lines.append("")
    lines.append("Machine: %s x %s, kernel %s, %s GiB RAM; confluent-kafka %s (librdkafka %s); %s; %s"
                 % (m["nproc"], m["cpu_model"], m["kernel"], m["mem_gib"], m["confluent_kafka"],
                    m["librdkafka"], report["versions"]["tansu"], report["versions"]["wire_guard"]))
    lines.append("")
    lines.append("Medians over %d rounds (each on a fresh broker and proxy, direct/proxied order alternating); \"paired per round\" is "
                 "the median of the within-round ratios or differences; \"quiet rounds\" keeps only the "
                 "pairs where other processes used < %.2f cores during both phases. %d records of %d "
                 "random bytes per throughput run (linger.ms=5, acks=all, no compression); "
                 "latency at %g records/s for %g s (linger.ms=0, acks=all). "
                 "MB = 10^6 bytes of record values."
                 % (report["rounds_completed"], QUIET_OTHER_CORES, p["records"], p["record_bytes"],
                    p["latency_rate"], p["latency_seconds"]))
    lines.append("")
    lines.append("| metric | direct | proxied | proxied vs direct | target | paired per round | "
                 "paired, quiet rounds (n) | range direct / proxied |")
    lines.append("|---|---:|---:|---:|---|---:|---:|---|")

    def rng(e: dict, digits: int) -> str:
        def one(r):
            return "n/a" if not r else "%s-%s" % (fmt(r[0], digits), fmt(r[1], digits))
        return "%s / %s" % (one(e.get("direct_range")), one(e.get("proxied_range")))

    def tput_row(label: str, key: str) -> None:
        e = s[key]
        ratio = e.get("ratio")
        verdict = "" if ratio is None else (" (met)" if ratio >= TARGET_THROUGHPUT_RATIO else " (missed)")
        paired = e.get("paired_ratio_median")
        qp = e.get("quiet_paired_ratio_median")
        lines.append("| %s | %s | %s | %s | >= %.2f x%s | %s | %s (%d) | %s |" % (
            label, fmt(e["direct"]), fmt(e["proxied"]),
            "n/a" if ratio is None else "%.3f x" % ratio, TARGET_THROUGHPUT_RATIO, verdict,
            "n/a" if paired is None else "%.3f x" % paired,
            "n/a" if qp is None else "%.3f x" % qp, e.get("quiet_pairs", 0), rng(e, 0)))

    def lat_row(label: str, key: str, target: Optional[float]) -> None:
        e = s[key]
        delta = e.get("delta_ms")
        if target is None:
            tgt = ""
        else:
            verdict = "" if delta is None else (" (met)" if delta < target else " (missed)")
            tgt = "< +%.1f ms%s" % (target, verdict)
        paired = e.get("paired_delta_ms_median")
        qp = e.get("quiet_paired_delta_ms_median")
        lines.append("| %s | %s | %s | %s | %s | %s | %s (%d) | %s |" % (
            label, fmt(e["direct"], 3), fmt(e["proxied"], 3),
            "n/a" if delta is None else "%+.3f ms" % delta, tgt,
            "n/a" if paired is None else "%+.3f ms" % paired,
            "n/a" if qp is None else "%+.3f ms" % qp, e.get("quiet_pairs", 0), rng(e, 2)))

    tput_row("produce throughput (MB/s)", "produce_mb_per_s")
    tput_row("consume throughput (MB/s)", "consume_mb_per_s")
    lat_row("produce latency p50 (ms)", "produce_latency_p50_ms", None)
    lat_row("produce latency p99 (ms)", "produce_latency_p99_ms", TARGET_ADDED_P99_MS)
    bulk, every = s["proxy_cost_bulk"], s["proxy_cost_all"]
    lines.append("| wire-guard CPU s per GB forwarded, throughput runs | | %s | | | | | |"
                 % fmt(bulk["cpu_s_per_gb_wire"], 2))
    lines.append("| wire-guard CPU s per GB forwarded, all proxied runs | | %s | | | | | |"
                 % fmt(every["cpu_s_per_gb_wire"], 2))
    lines.append("| wire-guard CPU per request, latency runs (us) | | %s | | | | | |"
                 % fmt(s["proxy_cost_latency"]["cpu_us_per_request"], 1))
    lines.append("| wire-guard peak RSS (MiB, VmHWM) | | %s | | | | | |"
                 % fmt(report["proxy_peak_rss_kib"] / 1024 if report["proxy_peak_rss_kib"] else None))
    lines.append("")
    busy = s["cores_busy"]
    lines.append("Cores busy (client + broker [+ wire-guard] CPU seconds per wall second, of %d): "
                 "produce %s direct / %s proxied; consume %s / %s; latency %s / %s."
                 % (report["machine"]["nproc"],
                    fmt(busy["produce"]["direct"], 2), fmt(busy["produce"]["proxied"], 2),
                    fmt(busy["consume"]["direct"], 2), fmt(busy["consume"]["proxied"], 2),
                    fmt(busy["latency"]["direct"], 2), fmt(busy["latency"]["proxied"], 2)))
    lines.append("")
    lines.append("CPU per GB = wire-guard utime+stime (/proc/<pid>/stat) during the proxied runs, "
                 "divided by the bytes it forwarded per wire_guard_bytes_total (Kafka frames, both "
                 "directions summed). Throughput runs: %.2f s for %.1f MB forwarded (%.1f MB of "
                 "record values, %s s/GB of values). All proxied runs, including the latency runs "
                 "where per-request cost dominates: %.2f s for %.1f MB forwarded (%s s/GB of values)."
                 % (bulk["cpu_s"], bulk["wire_bytes"] / MB, bulk["payload_bytes"] / MB,
                    fmt(bulk["cpu_s_per_gb_payload"], 2), every["cpu_s"], every["wire_bytes"] / MB,
                    fmt(every["cpu_s_per_gb_payload"], 2)))
    lines.append("")
    oth = s.get("other_cores_busy", {})
    lines.append("Client (this process), broker and wire-guard share the same %d cores. Other work "
                 "on the machine during the timed phases (from /proc/stat): median %s cores, worst "
                 "phase %s cores. Load average (1/5/15 min) before the run %s, after %s."
                 % (m["nproc"], fmt(oth.get("median"), 2), fmt(oth.get("max"), 2),
                    " ".join("%.2f" % x for x in m["loadavg_before"] or []),
                    " ".join("%.2f" % x for x in m["loadavg_after"] or [])))
    lines.append("")
    if oth.get("median") is not None and oth["median"] > 0.2:
        lines.append("**Other work on the machine used %.2f cores (median over the timed phases): "
                     "these numbers measure contention as much as wire-guard. Re-run on a quiet "
                     "machine.**" % oth["median"])
        lines.append("")
    lines.append("Per round:")
    lines.append("")
    lines.append("| round | side | produce MB/s | consume MB/s | p50 ms | p99 ms | max ms "
                 "| wire-guard CPU s | broker CPU s | other CPU s |")
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["rounds"]:
        def g(phase: str, key: str, d: int = 1) -> str:
            return fmt(r[phase][key], d) if phase in r else "n/a"
        cpu_wg = sum(r[ph]["meter"]["proxy_cpu_s"] for ph in ("produce", "consume", "latency") if ph in r)
        cpu_b = sum(r[ph]["meter"]["broker_cpu_s"] for ph in ("produce", "consume", "latency") if ph in r)
        cpu_o = sum(r[ph]["meter"]["other_cpu_s"] for ph in ("produce", "consume", "latency") if ph in r)
        lines.append("| %d | %s | %s | %s | %s | %s | %s | %.2f | %.2f | %.2f |" % (
            r["round"], r["side"], g("produce", "mb_per_s"), g("consume", "mb_per_s"),
            g("latency", "p50_ms", 3), g("latency", "p99_ms", 3), g("latency", "max_ms", 3),
            cpu_wg, cpu_b, cpu_o))
    lines.append("")
    lines.append("Run: %s, %.1f s wall." % (report["started_at"], report["wall_s"]))
    if report.get("error"):
        lines.append("")
        lines.append("**Incomplete run:** %s" % report["error"])
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wire-guard", required=True, help="wire-guard release binary")
    ap.add_argument("--tansu", default=os.environ.get("TANSU_BIN"), help="tansu binary [$TANSU_BIN]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=300_000, help="records per throughput run")
    ap.add_argument("--warmup-records", type=int, default=20_000,
                    help="untimed records produced on each side before the first round")
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--latency-rate", type=float, default=1000.0, help="records/s")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--quiet-s", type=float, default=0.5,
                    help="untimed read-on after the expected count, to catch extras")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--budget-s", type=float, default=250.0, help="wall-clock budget of the rounds")
    ap.add_argument("--quiet-wait-s", type=float, default=30.0,
                    help="longest wait for the machine to go idle before starting")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    if not args.tansu:
        ap.error("--tansu or $TANSU_BIN is required")

    # SIGTERM (e.g. from `timeout`) unwinds through the finally blocks below.
    def on_term(signum, frame):
        raise KeyboardInterrupt("interrupted by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    quiet = wait_for_quiet(args.quiet_wait_s, 0.25)
    budget = Budget(args.budget_s)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    machine = machine_info()
    machine["loadavg_before"] = loadavg()
    versions = {
        "tansu": tool_version([args.tansu, "--version"]),
        "wire_guard": tool_version([args.wire_guard, "--version"]),
    }
    print("machine: %d x %s, kernel %s" % (machine["nproc"], machine["cpu_model"], machine["kernel"]),
          flush=True)
    pool = value_pool(args.record_bytes, args.seed)
    rounds: List[dict] = []
    error = None
    peak_rss = None
    broker_peak_rss = None
    stack: Optional[Stack] = None
    workdir = tempfile.mkdtemp(prefix="wire-guard-bench-")
    def record_peaks(stack: Stack) -> None:
        nonlocal peak_rss, broker_peak_rss
        if stack.proxy is None or stack.proxy.proc.poll() is not None:
            return
        try:
            peak_rss = max(peak_rss or 0, proc_status_kib(stack.proxy.pid, "VmHWM") or 0)
            broker_peak_rss = max(broker_peak_rss or 0,
                                  proc_status_kib(stack.broker.pid, "VmHWM") or 0)
        except OSError:
            pass

    round_dir = workdir
    try:
        run_id = "%x" % random.SystemRandom().getrandbits(32)
        for rnd in range(args.rounds):
            # A fresh broker (and proxy) per round: Tansu slows as its in-memory store grows,
            # which otherwise dominates the differences between rounds.
            round_dir = os.path.join(workdir, "round-%d" % rnd)
            os.makedirs(round_dir)
            stack = Stack(args.tansu, args.wire_guard, round_dir)
            print("round %d: tansu on %s, wire-guard on %s (node %d on port %d, admin %d)"
                  % (rnd, stack.bootstrap("direct"), stack.bootstrap("proxied"), TANSU_NODE_ID,
                     stack.node_port, stack.admin_port), flush=True)
            order = ("direct", "proxied") if rnd % 2 == 0 else ("proxied", "direct")
            plan = [(side, {
                "tput": "bench-%s-r%d-%s-tput" % (run_id, rnd, side),
                "lat": "bench-%s-r%d-%s-lat" % (run_id, rnd, side),
            }) for side in order]
            warm_topic = "bench-%s-r%d-warm-up" % (run_id, rnd)
            create_topics(stack.bootstrap("direct"),
                          [warm_topic] + [t for _, ts in plan for t in ts.values()], 1, 30)
            # Untimed: the broker's first writes and the proxy's first connections are slower.
            if args.warmup_records:
                for side in ("direct", "proxied"):
                    produce_throughput(stack.bootstrap(side), warm_topic, args.warmup_records, pool,
                                       min(60.0, budget.left()))
            for side, topics in plan:
                run_side(stack, side, rnd, args, pool, budget, topics, rounds)
            record_peaks(stack)
            stack.stop()
            stack = None
    except (BenchError, KafkaException, KeyboardInterrupt, OSError) as e:
        error = "%s: %s" % (type(e).__name__, e)
        print("error: %s" % error, file=sys.stderr, flush=True)
    finally:
        if stack is not None:
            record_peaks(stack)
            stack.stop()
        if error:
            for name in ("tansu.log", "wire-guard.log"):
                print("--- %s (tail)\n%s" % (name, tail(os.path.join(round_dir, name))), file=sys.stderr)

    machine["loadavg_after"] = loadavg()
    # Only rounds where both sides finished every phase enter the medians.
    finished = [r for r in rounds if all(k in r for k in ("produce", "consume", "latency"))]
    full_rounds = {rnd for rnd in {r["round"] for r in finished}
                   if sum(1 for r in finished if r["round"] == rnd) == 2}
    completed = [r for r in finished if r["round"] in full_rounds]
    report = {
        "started_at": started_at,
        "wall_s": round(time.monotonic() - budget.start, 1),
        "machine": machine,
        "versions": versions,
        "parameters": {
            "rounds": args.rounds,
            "records": args.records,
            "record_bytes": args.record_bytes,
            "seed": args.seed,
            "warmup_records": args.warmup_records,
            "produce_conf": {"linger.ms": 5, "acks": "all", "compression.type": "none"},
            "latency_conf": {"linger.ms": 0, "acks": "all", "compression.type": "none"},
            "latency_rate": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "partitions": 1,
            "broker": "tansu, memory storage",
        },
        "targets": {"throughput_ratio_min": TARGET_THROUGHPUT_RATIO,
                    "added_p99_ms_max": TARGET_ADDED_P99_MS},
        "rounds_completed": len(full_rounds),
        "start_gate": quiet,
        "summary": summarize(completed, {"record_bytes": args.record_bytes}),
        "proxy_peak_rss_kib": peak_rss,
        "broker_peak_rss_kib": broker_peak_rss,
        "cpu_per_gb_basis": "wire-guard utime+stime over the proxied phases, divided by "
                            "wire_guard_bytes_total (both directions, frame bytes) or by record-value bytes",
        "rounds": rounds,
        "error": error,
    }
    md = render_markdown(report)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "wire-guard.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out_dir, "wire-guard.md"), "w") as f:
        f.write(md)
    print()
    print(md, end="")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
