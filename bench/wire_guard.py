#!/usr/bin/env python3
"""Throughput, latency and cost of wire-guard in front of Apache Kafka 4.1.

One run starts a single-node KRaft Kafka broker (scripts/kafka-broker) and
warms it up untimed (8 x 300k records produced, two read back, one Java
producer and consumer run): a fresh Kafka JVM spends several GB of traffic
getting faster, which would otherwise favour whichever side runs second. Each
round then starts a fresh wire-guard release binary in front of that broker
and runs each phase below twice, once directly against the broker and once
through the proxy (clients change only bootstrap.servers). The two sides of a
phase run back to back, and which side goes first alternates between phases
and rounds, so drift and other work on the machine hit both sides alike; a
short gate before each pair waits (bounded) for other work on the machine to
calm down. Every side has its own topics (one partition each), deleted after
the round; records are fixed-seed random bytes.

Phases, in order, per round:

* rdk-produce: confluent-kafka (librdkafka) producer, 1 KiB values,
  linger.ms=5, acks=all, no compression; timed from the first produce() call
  to the last delivery callback (connections opened by an untimed record);
* rdk-consume: the same topic read back by a librdkafka consumer with
  assign() (no group), timed from the first batch to the last expected record;
* java-produce: Kafka's own org.apache.kafka.tools.ProducerPerformance
  (--throughput -1 --record-size 1024 --num-records N, acks=all, the Java
  client's defaults otherwise); its records/sec line is parsed;
* java-consume: org.apache.kafka.tools.ConsumerPerformance (--messages N) on
  the topic java-produce wrote; the figure is its fetch rate (fetch.MB.sec:
  consumer-group join excluded), converted to 10^6-byte MB;
* latency: librdkafka producer at a fixed rate (default 1000 records/s for
  10 s, linger.ms=0, acks=all); latency = delivery callback time - produce()
  call time; between sends the client blocks in producer.poll() (ms timeouts)
  rather than sleeping, so callbacks run as soon as the acknowledgement is in;
* fanout-tput: 200 librdkafka producers at once (one thread and one
  Producer each: one broker connection each once librdkafka has dropped its
  bootstrap connection, so ~200 proxied connections), each sending
  its share of the records as fast as it can (linger.ms=5, acks=all);
  aggregate MB/s from the first send to the last delivery;
* fanout-latency: 200 fresh producers (linger.ms=0), each at a modest fixed
  rate (default 10 records/s, 2000/s in all, for 10 s), each polling while it
  waits; latency percentiles over all records.

For the proxied side the harness samples wire-guard's CPU time
(/proc/<pid>/stat), its resident set (VmRSS every 0.1 s, VmHWM per round) and
its /metrics counters, and reports CPU seconds per GB forwarded (frame bytes,
both directions). After the rounds, when a consume ratio stays under 0.95 (or
with --diagnose always), a diagnosis pass on a fresh broker and proxy compares
librdkafka's per-request round trip (statistics) direct and proxied and counts
wire-guard's syscalls per MB during a consume (perf stat tracepoints, then
strace -c), to show where the consume time goes.

Reported per metric: the median of each side, and the median and the range
(min-max) of the per-round paired ratios (throughput) or differences (latency).
Results go to stdout and to <out-dir>/wire-guard.{md,json}. Only 127.0.0.1 is
used; children die with the harness (SIGTERM unwinds and stops them, and they
carry a parent-death signal). Timings are reported against the targets, never
asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

from confluent_kafka import (
    Consumer, KafkaError, KafkaException, Producer, TopicPartition, libversion, version,
)
from confluent_kafka.admin import AdminClient, NewTopic

HOST = "127.0.0.1"
NODE_ID = 1
MB = 1_000_000
MIB = 1024 * 1024
GB = 1_000_000_000

# A phase counts as undisturbed when other processes used less CPU than this (cores).
QUIET_OTHER_CORES = 0.15

# Targets the results are reported against (not asserted).
TARGET_THROUGHPUT_RATIO = 0.95
TARGET_ADDED_P99_MS = 1.0

CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PHASES = ("rdk_produce", "rdk_consume", "java_produce", "java_consume", "latency",
          "fanout_tput", "fanout_latency")


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


_taken_ports: set = set()


def free_port() -> int:
    """A loopback port that was free just now and not handed out before in this run."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _taken_ports:
            _taken_ports.add(port)
            return port


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

    def __init__(self, name: str, argv: List[str], log: str, env: Optional[dict] = None,
                 grace: float = 5.0):
        self.name = name
        self.log = log
        self.grace = grace
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def run_child(argv: List[str], timeout: float, what: str, env: Optional[dict] = None
              ) -> Tuple[str, str, float]:
    """Runs a short-lived child to completion; killed (with its group) on timeout or signal."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s: no result within %.0f s" % (what, timeout))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    out_s, err_s = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError("%s exited with %d:\n%s%s" % (what, proc.returncode, out_s[-2000:],
                                                        err_s[-2000:]))
    return out_s, err_s, time.monotonic() - t0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def cpu_split(pid: int) -> Tuple[float, float]:
    """(utime, stime) of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) / CLK_TCK, int(rest[12]) / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the Java perf tools)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


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
        time.sleep(2.0)


class QuietGate:
    """Before each phase pair: waits (bounded per pair and in total) while other work on the
    machine uses more than `threshold` cores, so both sides of a pair start on a calmer box."""

    def __init__(self, per_wait: float, total_wait: float, threshold: float):
        self.per_wait = per_wait
        self.left = total_wait
        self.threshold = threshold

    def wait(self, stack: "Stack") -> dict:
        start = time.monotonic()
        while True:
            a, own_a = machine_cpu(), self._own(stack)
            time.sleep(1.0)
            b, own_b = machine_cpu(), self._own(stack)
            other = max(0.0, (b["busy"] - a["busy"]) - (own_b - own_a))
            waited = time.monotonic() - start
            if other <= self.threshold or waited >= self.per_wait or self.left - waited <= 0:
                self.left -= waited
                return {"waited_s": round(waited, 1), "other_cores": round(other, 2)}

    @staticmethod
    def _own(stack: "Stack") -> float:
        return (time.process_time() + children_cpu() + cpu_seconds(stack.broker_pid)
                + cpu_seconds(stack.proxy.pid))


def proc_status_kib(pid: int, key: str) -> Optional[int]:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


_PROM_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)\s*$', re.M)


def scrape(admin_port: int) -> Dict[str, float]:
    """wire-guard's /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, admin_port), timeout=5) as r:
        text = r.read().decode()
    return {name + (labels or ""): float(v) for name, labels, v in _PROM_RE.findall(text)}


def proxy_counters(admin_port: int) -> Dict[str, float]:
    """The counters a phase is charged with: bytes by direction, requests, Fetch latency."""
    m = scrape(admin_port)
    out: Dict[str, float] = {}
    for k, v in m.items():
        if k.startswith("wire_guard_bytes_total{"):
            out["bytes:" + k.split('"')[1]] = v
        elif k.startswith("wire_guard_requests_total{"):
            out["requests"] = out.get("requests", 0) + v
            if 'api="Fetch"' in k:
                out["fetch_requests"] = v
        elif k.startswith("wire_guard_upstream_latency_seconds_") and (
                'api="Fetch"' in k or 'api="Produce"' in k):
            api = "fetch" if 'api="Fetch"' in k else "produce"
            out["%s_latency_%s" % (api, k.split("{")[0].rsplit("_", 1)[1])] = v
        elif k.startswith(("wire_guard_connection_errors_total", "wire_guard_connections_refused_total")):
            out[k] = v
    return out


class Sampler(threading.Thread):
    """Samples wire-guard's VmRSS (every 0.1 s) and open connections (every 0.5 s)."""

    def __init__(self, pid: int, admin_port: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.admin_port = admin_port
        self.max_rss_kib = 0
        self.max_connections = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._stop_evt.is_set():
            try:
                self.max_rss_kib = max(self.max_rss_kib, proc_status_kib(self.pid, "VmRSS") or 0)
                if i % 5 == 0:
                    m = scrape(self.admin_port)
                    self.max_connections = max(self.max_connections,
                                               int(m.get("wire_guard_connections_active", 0)))
            except Exception:
                pass
            i += 1
            self._stop_evt.wait(0.1)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(2)


class Meter:
    """wire-guard, broker and client CPU plus wire-guard's counters and RSS around one phase."""

    def __init__(self, stack: "Stack"):
        self.stack = stack

    def __enter__(self) -> "Meter":
        s = self.stack
        self.t0 = time.monotonic()
        self.proxy_split0 = cpu_split(s.proxy.pid)
        self.proxy_cpu0 = sum(self.proxy_split0)
        self.broker_cpu0 = cpu_seconds(s.broker_pid)
        # This process (Python plus librdkafka's threads) and reaped children (the Java tools).
        self.client_cpu0 = time.process_time() + children_cpu()
        self.machine0 = machine_cpu()
        self.counters0 = proxy_counters(s.admin_port)
        self.sampler = Sampler(s.proxy.pid, s.admin_port)
        self.sampler.start()
        self.marked: Optional[Dict[str, float]] = None
        return self

    def mark(self) -> None:
        """The workload's own end: upstream latencies are read here, so a request still open
        afterwards (a consumer's trailing long-poll Fetch) does not count."""
        self.marked = proxy_counters(self.stack.admin_port)

    def __exit__(self, *exc) -> None:
        s = self.stack
        self.sampler.stop()
        self.wall_s = time.monotonic() - self.t0
        self.client_cpu_s = time.process_time() + children_cpu() - self.client_cpu0
        split = cpu_split(s.proxy.pid)
        self.proxy_user_s = split[0] - self.proxy_split0[0]
        self.proxy_sys_s = split[1] - self.proxy_split0[1]
        self.proxy_cpu_s = sum(split) - self.proxy_cpu0
        self.broker_cpu_s = cpu_seconds(s.broker_pid) - self.broker_cpu0
        m1 = machine_cpu()
        self.steal_s = m1["steal"] - self.machine0["steal"]
        # CPU used by processes outside this benchmark (other work on the box).
        self.other_cpu_s = max(0.0, m1["busy"] - self.machine0["busy"] - self.client_cpu_s
                               - self.broker_cpu_s - self.proxy_cpu_s)
        if exc[0] is None:
            c1 = proxy_counters(s.admin_port)
            if self.marked is not None:
                c1.update({k: v for k, v in self.marked.items() if "_latency_" in k})
            self.delta = {k: c1.get(k, 0) - self.counters0.get(k, 0) for k in c1}
        else:
            self.delta = {}

    def as_dict(self) -> dict:
        d = self.delta
        return {
            "wall_s": round(self.wall_s, 3),
            "proxy_cpu_s": round(self.proxy_cpu_s, 3),
            "proxy_user_s": round(self.proxy_user_s, 3),
            "proxy_sys_s": round(self.proxy_sys_s, 3),
            "broker_cpu_s": round(self.broker_cpu_s, 3),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "other_cpu_s": round(self.other_cpu_s, 3),
            "steal_s": round(self.steal_s, 3),
            "proxy_bytes": {k[6:]: int(v) for k, v in d.items() if k.startswith("bytes:")},
            "proxy_requests": int(d.get("requests", 0)),
            "proxy_fetch_requests": int(d.get("fetch_requests", 0)),
            "proxy_fetch_upstream_ms_mean": (1000 * d["fetch_latency_sum"] / d["fetch_latency_count"]
                                             if d.get("fetch_latency_count") else None),
            "proxy_produce_upstream_ms_mean": (1000 * d["produce_latency_sum"] / d["produce_latency_count"]
                                               if d.get("produce_latency_count") else None),
            "proxy_errors": {k: int(v) for k, v in d.items()
                             if k.startswith("wire_guard_conn") and v},
            "proxy_max_rss_kib": self.sampler.max_rss_kib,
            "proxy_max_connections": self.sampler.max_connections,
        }


class Broker:
    """A single-node Kafka broker (scripts/kafka-broker) on free loopback ports."""

    def __init__(self, args, workdir: str, broker_config: Optional[List[str]] = None):
        os.makedirs(workdir, exist_ok=True)
        self.dir = os.path.join(workdir, "kafka")
        self.port = free_port()
        controller_port = free_port()
        env = dict(os.environ, KAFKA_LIBS=args.kafka_libs)
        self.proc = Managed("kafka-broker", [
            "bash", args.kafka_broker, "--dir", self.dir,
            "--controller-port", str(controller_port), "--plaintext-port", str(self.port),
            "--heap", args.broker_heap, "--print-ready",
        ] + [a for c in (broker_config or []) for a in ("--config", c)],
            os.path.join(workdir, "kafka-broker.out"), env=env, grace=20.0)
        self.log = os.path.join(self.dir, "broker.log")
        deadline = time.monotonic() + 120
        while True:
            if self.proc.proc.poll() is not None:
                raise BenchError("kafka-broker exited with %s; output:\n%s\nbroker.log tail:\n%s"
                                 % (self.proc.proc.returncode, tail(self.proc.log), tail(self.log)))
            with open(self.proc.log, "r", errors="replace") as f:
                if "ready" in f.read().split():
                    break
            if time.monotonic() > deadline:
                raise BenchError("Kafka not ready within 120 s; broker.log tail:\n%s" % tail(self.log))
            time.sleep(0.1)
        with open(os.path.join(self.dir, "broker.pid")) as f:
            self.pid = int(f.read().strip())
        wait_for_port(self.port, self.proc.proc, "kafka", self.log, 30)

    def bootstrap(self) -> str:
        return "%s:%d" % (HOST, self.port)

    def check_alive(self) -> None:
        self.proc.check_alive()

    def vmhwm_kib(self) -> Optional[int]:
        try:
            return proc_status_kib(self.pid, "VmHWM")
        except OSError:
            return None

    def stop(self) -> None:
        try:
            self.proc.stop()
        finally:
            # The logs stay; the partition data (GBs) goes.
            shutil.rmtree(os.path.join(self.dir, "data"), ignore_errors=True)


def warm_broker(args, broker: Broker, pool: List[bytes], budget: Budget, java: bool) -> dict:
    """Untimed load until the broker's JIT has settled.

    A fresh Kafka JVM needs a few GB of traffic before its per-request CPU stops falling
    (broker CPU for 300 MB of produce drops from ~2.7 s to ~0.9 s over the first ~3 GB here);
    without this the second run of every pair would look faster, whichever side it is.
    """
    t0 = time.monotonic()
    bs = broker.bootstrap()
    topics = ["bench-warm-%d" % i for i in range(args.broker_warmup_runs)] + ["bench-warm-java"]
    create_topics(bs, topics, 1, 60)
    for t in topics[:-1]:
        produce_throughput(bs, t, args.records, pool, min(180.0, budget.left()))
    for t in topics[:-1][:2]:
        consume_throughput(bs, t, args.records + 1, min(180.0, budget.left()), 0)
    if java:
        java_produce(args, bs, topics[-1], args.java_records, min(240.0, budget.left()))
        java_consume(args, bs, topics[-1], args.java_records, "bench-warm", min(240.0, budget.left()))
    delete_topics(bs, topics)
    return {"seconds": round(time.monotonic() - t0, 1), "produce_runs": len(topics) - 1,
            "records_per_run": args.records, "java": java}


class Stack:
    """A fresh wire-guard in front of `broker`, on free loopback ports."""

    def __init__(self, args, workdir: str, broker: Broker):
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.broker = broker
        self.broker_pid = broker.pid
        self.broker_port = broker.port
        self.proxy: Optional[Managed] = None
        self.listen_port = free_port()
        self.admin_port = free_port()
        self.node_port = free_port()
        self.broker_port_base = self.node_port - NODE_ID
        penv = dict(os.environ)
        penv.setdefault("RUST_LOG", "info")
        self.proxy = Managed("wire-guard", [
            args.wire_guard,
            "--upstream", "%s:%d" % (HOST, self.broker_port),
            "--listen", "%s:%d" % (HOST, self.listen_port),
            "--broker-port-base", str(self.broker_port_base),
            "--admin-listen", "%s:%d" % (HOST, self.admin_port),
            "--drain-timeout-secs", "2",
            "--log-format", "json",
        ], os.path.join(workdir, "wire-guard.log"), env=penv)
        wait_for_port(self.listen_port, self.proxy.proc, "wire-guard", self.proxy.log, 20)
        wait_for_port(self.admin_port, self.proxy.proc, "wire-guard", self.proxy.log, 20)

    def bootstrap(self, side: str) -> str:
        port = self.broker_port if side == "direct" else self.listen_port
        return "%s:%d" % (HOST, port)

    def check_alive(self) -> None:
        self.broker.check_alive()
        if self.proxy:
            self.proxy.check_alive()

    def peaks(self) -> Dict[str, Optional[int]]:
        out: Dict[str, Optional[int]] = {"proxy_vmhwm_kib": None, "broker_vmhwm_kib": None}
        try:
            if self.proxy is not None and self.proxy.proc.poll() is None:
                out["proxy_vmhwm_kib"] = proc_status_kib(self.proxy.pid, "VmHWM")
        except OSError:
            pass
        out["broker_vmhwm_kib"] = self.broker.vmhwm_kib()
        return out

    def stop(self) -> None:
        """Stops the proxy only; the broker outlives it."""
        if self.proxy is not None:
            try:
                self.proxy.stop()
            except Exception as e:
                print("warning: stopping wire-guard: %s" % e, file=sys.stderr)


def proxy_log_summary(path: str) -> dict:
    """Counts wire-guard's WARN/ERROR lines and keeps a few distinct messages."""
    levels: Dict[str, int] = {}
    samples: List[str] = []
    seen: set = set()
    try:
        with open(path, "r", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    levels["unparsed"] = levels.get("unparsed", 0) + 1
                    continue
                lvl = rec.get("level", "?")
                levels[lvl] = levels.get(lvl, 0) + 1
                if lvl in ("WARN", "ERROR"):
                    f_ = rec.get("fields", {})
                    key = "%s %s %s" % (lvl, f_.get("message"), f_.get("cause") or f_.get("error"))
                    if key not in seen and len(samples) < 8:
                        seen.add(key)
                        samples.append(json.dumps({k: v for k, v in f_.items() if k != "conn"}))
    except OSError:
        pass
    return {"levels": levels, "warn_error_samples": samples}


# --- librdkafka clients ----------------------------------------------------


class ClientErrors:
    """Errors librdkafka reports through error_cb (connection trouble and the like)."""

    def __init__(self):
        self.seen: List[str] = []
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError) -> None:
        with self._lock:
            self.count += 1
            if len(self.seen) < 20:
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


def delete_topics(bootstrap: str, names: List[str], timeout: float = 30.0) -> None:
    """Best effort: frees the broker's disk and page cache between rounds."""
    admin = AdminClient(base_conf(bootstrap, ClientErrors(), "bench-admin"))
    for fut in admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout).values():
        try:
            fut.result(timeout)
        except Exception:
            pass


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


def poll_until(producer: Producer, due: float) -> None:
    """Serves delivery callbacks as they arrive until perf_counter() reaches `due`.

    poll() takes whole milliseconds, so the send may be up to ~1 ms late; that moves the send,
    never the measurement (latency is taken from the actual produce() call).
    """
    while True:
        left = due - time.perf_counter()
        if left <= 0:
            return
        producer.poll((math.ceil(left * 1000) + 0.5) / 1000)


def produce_throughput(bootstrap: str, topic: str, records: int, pool: List[bytes],
                       timeout: float, stats: Optional[List[dict]] = None) -> dict:
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
    if stats is not None:
        conf["statistics.interval.ms"] = 200
        conf["stats_cb"] = lambda js: stats.append(json.loads(js))
    producer = Producer(conf)
    try:
        warm_up(producer, topic, pool[0], 1, min(30.0, timeout))
        n_pool = len(pool)
        produce = producer.produce
        poll = producer.poll
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter()
        i = 0
        while i < records:
            try:
                produce(topic, pool[i % n_pool], on_delivery=on_delivery)
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
                       quiet_s: float, stats: Optional[List[dict]] = None,
                       conf_extra: Optional[dict] = None,
                       on_done: Optional[Callable[[], None]] = None) -> dict:
    """Reads partition 0 of `topic` from offset 0 until `expected` records arrived.

    Records reach the application in batches, so the clock starts when the first batch is
    handed over and only the bytes of later batches count: throughput = bytes after the first
    batch / (time of the last expected record - time of the first batch). The partition is
    then read on until quiet for `quiet_s` (untimed), so extra records would be noticed.
    With `stats`, librdkafka's statistics (every 200 ms) are appended to it.
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
    if stats is not None:
        conf["statistics.interval.ms"] = 200
        conf["stats_cb"] = lambda js: stats.append(json.loads(js))
    conf.update(conf_extra or {})
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
                if on_done is not None:
                    on_done()
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
    k = max(0, min(len(sorted_values) - 1, int(math.ceil(p / 100.0 * len(sorted_values))) - 1))
    return sorted_values[k]


def latency_stats(lat_s: List[float]) -> dict:
    lat = sorted(x * 1000 for x in lat_s)
    return {
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "p999_ms": percentile(lat, 99.9),
        "max_ms": lat[-1] if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) if lat else float("nan"),
    }


def produce_latency(bootstrap: str, topic: str, rate: float, seconds: float, pool: List[bytes],
                    timeout: float) -> dict:
    """Produces at a fixed rate, polling between sends; latency = callback time - produce() time."""
    errors = ClientErrors()
    latencies: List[float] = []
    failed: List[str] = []

    def on_delivery(sent_at, err, msg):
        now = time.perf_counter()
        if err is not None:
            failed.append(err.str())
            return
        latencies.append(now - sent_at)

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
            poll_until(producer, due)
            sent_at = time.perf_counter()
            if sent_at - due > interval:
                behind += 1
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
    out = {
        "records": total,
        "payload_bytes": total * len(pool[0]),
        "target_rate": rate,
        "achieved_rate": round(achieved_rate, 1),
        "sent_late": behind,
        "client_errors": errors.seen,
    }
    out.update(latency_stats(latencies))
    return out


# --- many producers at once ------------------------------------------------


def _start_producers(bootstrap: str, topic: str, n: int, conf_extra: dict, value: bytes,
                     errors: ClientErrors, timeout: float) -> List[Producer]:
    """n producers, each with its connections open (one delivered record each)."""
    producers = []
    for i in range(n):
        conf = base_conf(bootstrap, errors, "bench-fan-%d" % i)
        conf.update(conf_extra)
        producers.append(Producer(conf))
    for p in producers:
        p.produce(topic, value)
    deadline = time.monotonic() + timeout
    for p in producers:
        if p.flush(max(0.1, deadline - time.monotonic())):
            raise BenchError("fan-out warm-up: a producer could not deliver within %.0f s; client "
                             "errors: %s" % (timeout, errors.seen[-3:]))
    return producers


def _run_threads(workers: List[threading.Thread], stop: threading.Event, timeout: float,
                 what: str) -> None:
    deadline = time.monotonic() + timeout
    try:
        for t in workers:
            while t.is_alive():
                t.join(0.2)
                if time.monotonic() > deadline:
                    raise BenchError("%s: threads still running after %.0f s" % (what, timeout))
    finally:
        stop.set()
        for t in workers:
            t.join(2)


def fanout_throughput(bootstrap: str, topic: str, n: int, records_total: int, pool: List[bytes],
                      timeout: float) -> dict:
    """n producers in n threads, each sending records_total/n records as fast as it can."""
    errors = ClientErrors()
    per = records_total // n
    producers = _start_producers(bootstrap, topic, n, {"linger.ms": 5, "acks": "all",
                                                      "compression.type": "none"},
                                 pool[0], errors, min(60.0, timeout))
    go, stop = threading.Event(), threading.Event()
    states = [{"delivered": 0, "failed": 0, "last": 0.0, "error": None} for _ in range(n)]
    n_pool = len(pool)

    def work(idx: int) -> None:
        p, st = producers[idx], states[idx]

        def cb(err, msg):
            if err is None:
                st["delivered"] += 1
            else:
                st["failed"] += 1
                st["error"] = st["error"] or err.str()
            st["last"] = time.perf_counter()

        try:
            go.wait()
            i = 0
            while i < per and not stop.is_set():
                try:
                    p.produce(topic, pool[(idx + i) % n_pool], on_delivery=cb)
                    i += 1
                except BufferError:
                    p.poll(0.001)
                if i % 100 == 0:
                    p.poll(0)
            while st["delivered"] + st["failed"] < per and not stop.is_set():
                p.poll(0.05)
        except Exception as e:  # reported below
            st["error"] = st["error"] or repr(e)

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in workers:
        t.start()
    t0 = time.perf_counter()
    go.set()
    try:
        _run_threads(workers, stop, timeout, "fan-out produce")
    finally:
        for p in producers:
            p.flush(1)
        del producers
    delivered = sum(s["delivered"] for s in states)
    bad = [s["error"] for s in states if s["error"]]
    if bad or delivered < per * n:
        raise BenchError("fan-out produce: %d of %d delivered; errors: %s"
                         % (delivered, per * n, bad[:3]))
    elapsed = max(s["last"] for s in states) - t0
    payload = per * n * len(pool[0])
    return {
        "producers": n,
        "records": per * n,
        "payload_bytes": payload,
        "seconds": round(elapsed, 4),
        "mb_per_s": payload / MB / elapsed,
        "client_errors": errors.seen,
        "client_error_count": errors.count,
    }


def fanout_latency(bootstrap: str, topic: str, n: int, rate_each: float, seconds: float,
                   pool: List[bytes], timeout: float) -> dict:
    """n producers in n threads at rate_each records/s each, schedules staggered evenly."""
    errors = ClientErrors()
    producers = _start_producers(bootstrap, topic, n, {"linger.ms": 0, "acks": "all",
                                                      "compression.type": "none"},
                                 pool[0], errors, min(60.0, timeout))
    per = int(rate_each * seconds)
    interval = 1.0 / rate_each
    go, stop = threading.Event(), threading.Event()
    lat: List[List[float]] = [[] for _ in range(n)]
    errs: List[Optional[str]] = [None] * n
    late = [0] * n
    n_pool = len(pool)
    t0_box = [0.0]

    def work(idx: int) -> None:
        p, mine = producers[idx], lat[idx]
        failed = []

        def cb(sent_at, err, msg):
            now = time.perf_counter()
            if err is None:
                mine.append(now - sent_at)
            else:
                failed.append(err.str())

        try:
            go.wait()
            start = t0_box[0] + idx * interval / n
            for i in range(per):
                if stop.is_set():
                    return
                due = start + i * interval
                poll_until(p, due)
                sent_at = time.perf_counter()
                if sent_at - due > interval:
                    late[idx] += 1
                p.produce(topic, pool[(idx + i) % n_pool],
                          on_delivery=lambda err, msg, s=sent_at: cb(s, err, msg))
                p.poll(0)
            while len(mine) + len(failed) < per and not stop.is_set():
                p.poll(0.05)
            if failed:
                errs[idx] = failed[0]
        except Exception as e:
            errs[idx] = repr(e)

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in workers:
        t.start()
    t0_box[0] = time.perf_counter() + 0.05
    go.set()
    try:
        _run_threads(workers, stop, seconds + timeout, "fan-out latency")
    finally:
        for p in producers:
            p.flush(1)
        del producers
    wall = time.perf_counter() - t0_box[0]
    all_lat = [x for xs in lat for x in xs]
    bad = [e for e in errs if e]
    if bad or len(all_lat) < per * n:
        raise BenchError("fan-out latency: %d of %d delivered; errors: %s"
                         % (len(all_lat), per * n, bad[:3]))
    out = {
        "producers": n,
        "records": per * n,
        "payload_bytes": per * n * len(pool[0]),
        "target_rate": rate_each * n,
        "achieved_rate": round(per * n / wall, 1),
        "sent_late": sum(late),
        "client_errors": errors.seen,
        "client_error_count": errors.count,
    }
    out.update(latency_stats(all_lat))
    return out


# --- Kafka's own perf tools (Java client) ----------------------------------


def java_binary() -> str:
    if os.environ.get("JAVA"):
        return os.environ["JAVA"]
    jh = os.environ.get("JAVA_HOME")
    if jh and os.access(os.path.join(jh, "bin", "java"), os.X_OK):
        return os.path.join(jh, "bin", "java")
    return "java"


def java_tool(args, cls: str, tool_args: List[str], timeout: float) -> Tuple[str, float]:
    # The JVM flags of Kafka's bin/kafka-*-perf-test.sh (kafka-run-class.sh defaults, 512 MB heap).
    argv = [java_binary(), "-Xmx512M", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:MaxInlineLevel=15", "-Djava.awt.headless=true", "-Xshare:auto",
            "-Dlog4j2.configurationFile=" + os.path.join(HERE, "perf-tools-log4j2.yaml"),
            "-cp", os.path.join(args.kafka_libs, "*"), cls] + tool_args
    out, err, wall = run_child(argv, timeout, cls.rsplit(".", 1)[1])
    return out + "\n" + err, wall


_PP_RE = re.compile(r'(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg '
                    r'latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, '
                    r'(\d+) ms 99\.9th')


def java_produce(args, bootstrap: str, topic: str, records: int, timeout: float) -> dict:
    out, wall = java_tool(args, "org.apache.kafka.tools.ProducerPerformance", [
        "--topic", topic, "--num-records", str(records), "--record-size", str(args.record_bytes),
        "--throughput", "-1", "--producer-props", "bootstrap.servers=" + bootstrap, "acks=all",
    ], timeout)
    m = _PP_RE.search(out)
    if not m:
        raise BenchError("ProducerPerformance: no summary line in its output:\n%s" % out[-2000:])
    sent, rps = int(m.group(1)), float(m.group(2))
    if sent != records:
        raise BenchError("ProducerPerformance sent %d of %d records" % (sent, records))
    return {
        "records": records,
        "payload_bytes": records * args.record_bytes,
        "records_per_s": rps,
        "mb_per_s": rps * args.record_bytes / MB,
        "tool_mib_per_s": float(m.group(3)),
        "avg_latency_ms": float(m.group(4)),
        "p50_ms": int(m.group(6)), "p99_ms": int(m.group(8)), "p999_ms": int(m.group(9)),
        "jvm_wall_s": round(wall, 2),
        "summary_line": m.group(0),
    }


def java_consume(args, bootstrap: str, topic: str, records: int, group: str, timeout: float) -> dict:
    out, wall = java_tool(args, "org.apache.kafka.tools.ConsumerPerformance", [
        "--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records),
        "--group", group, "--timeout", "20000",
    ], timeout)
    lines = [ln.strip() for ln in out.splitlines()]
    try:
        i = next(k for k, ln in enumerate(lines) if ln.startswith("start.time"))
        header = [h.strip() for h in lines[i].split(",")]
        values = dict(zip(header, [v.strip() for v in lines[i + 1].split(",")]))
        mib = float(values["data.consumed.in.MB"])
        n = int(values["data.consumed.in.nMsg"])
        rebalance_ms = float(values["rebalance.time.ms"])
        fetch_ms = float(values["fetch.time.ms"])
    except (StopIteration, IndexError, KeyError, ValueError):
        raise BenchError("ConsumerPerformance: no result line in its output:\n%s" % out[-2000:])
    if n < records:
        raise BenchError("ConsumerPerformance read %d of %d records:\n%s" % (n, records, out[-1000:]))
    return {
        "records": n,
        "payload_bytes": int(mib * MIB),
        "mb_per_s": mib * MIB / MB / (fetch_ms / 1000) if fetch_ms > 0 else None,
        "tool_fetch_mib_per_s": float(values.get("fetch.MB.sec", "nan")),
        "fetch_ms": fetch_ms,
        "rebalance_ms": rebalance_ms,
        "jvm_wall_s": round(wall, 2),
    }


# --- the run ---------------------------------------------------------------


def phase_fn(name: str, args, stack: Stack, side: str, topics: Dict[str, str], rnd: int,
             pool: List[bytes], budget: Budget) -> Callable[[], dict]:
    bs = stack.bootstrap(side)
    t = lambda cap: min(cap, max(1.0, budget.left()))  # noqa: E731
    if name == "rdk_produce":
        return lambda: produce_throughput(bs, topics["rdk"], args.records, pool, t(180.0))
    if name == "rdk_consume":
        return lambda: consume_throughput(bs, topics["rdk"], args.records + 1, t(180.0), args.quiet_s)
    if name == "java_produce":
        return lambda: java_produce(args, bs, topics["java"], args.java_records, t(240.0))
    if name == "java_consume":
        return lambda: java_consume(args, bs, topics["java"], args.java_records,
                                    topics["group"], t(240.0))
    if name == "latency":
        return lambda: produce_latency(bs, topics["lat"], args.latency_rate, args.latency_seconds,
                                       pool, t(60.0))
    if name == "fanout_tput":
        return lambda: fanout_throughput(bs, topics["fan"], args.fanout_producers,
                                         args.fanout_records, pool, t(180.0))
    if name == "fanout_latency":
        return lambda: fanout_latency(bs, topics["fanlat"], args.fanout_producers,
                                      args.fanout_rate, args.latency_seconds, pool, t(60.0))
    raise ValueError(name)


def brief(name: str, r: dict) -> str:
    if "p50_ms" in r and name in ("latency", "fanout_latency"):
        return "p50 %.3f p99 %.3f p99.9 %.3f ms" % (r["p50_ms"], r["p99_ms"], r["p999_ms"])
    return "%s MB/s" % fmt(r.get("mb_per_s"))


def run_round(args, stack: Stack, rnd: int, run_id: str, pool: List[bytes], budget: Budget,
              rounds: List[dict], gate: QuietGate) -> List[str]:
    """All phases of one round, the two sides of each phase back to back; returns its topics."""
    outs = {side: {"round": rnd, "side": side} for side in ("direct", "proxied")}
    # Listed now, so a failed phase leaves the partial results in the report.
    rounds.extend([outs["direct"], outs["proxied"]])
    topics = {side: {
        "rdk": "bench-%s-r%d-%s-rdk" % (run_id, rnd, side),
        "java": "bench-%s-r%d-%s-java" % (run_id, rnd, side),
        "lat": "bench-%s-r%d-%s-lat" % (run_id, rnd, side),
        "fan": "bench-%s-r%d-%s-fan" % (run_id, rnd, side),
        "fanlat": "bench-%s-r%d-%s-fanlat" % (run_id, rnd, side),
        "group": "bench-%s-r%d-%s" % (run_id, rnd, side),
    } for side in ("direct", "proxied")}
    warm = "bench-%s-r%d-warm-up" % (run_id, rnd)
    all_topics = [warm] + [v for ts in topics.values() for k, v in ts.items() if k != "group"]
    create_topics(stack.bootstrap("direct"), all_topics, 1, 60)
    # Untimed: the broker's first writes and reads (JIT) and the proxy's first connections.
    if args.warmup_records:
        for side in ("direct", "proxied"):
            produce_throughput(stack.bootstrap(side), warm, args.warmup_records, pool,
                               min(120.0, budget.left()))
        for side in ("direct", "proxied"):
            consume_throughput(stack.bootstrap(side), warm, args.warmup_records, min(120.0, budget.left()), 0)
    for j, name in enumerate(PHASES):
        if name not in args.phases:
            continue
        order = ("direct", "proxied") if (rnd + j) % 2 == 0 else ("proxied", "direct")
        gated = gate.wait(stack)
        for side in order:
            budget.check("%s %s round %d" % (name, side, rnd))
            stack.check_alive()
            fn = phase_fn(name, args, stack, side, topics[side], rnd, pool, budget)
            with Meter(stack) as meter:
                result = fn()
            stack.check_alive()
            result["meter"] = meter.as_dict()
            result["gate"] = gated
            outs[side][name] = result
            mm = result["meter"]
            print("  round %d %-14s %-7s %-34s cpu s: wire-guard %.2f, broker %.2f, client %.2f, "
                  "other %.2f; wall %.1f s"
                  % (rnd, name, side, brief(name, result), mm["proxy_cpu_s"], mm["broker_cpu_s"],
                     mm["client_cpu_s"], mm["other_cpu_s"], mm["wall_s"]), flush=True)
    return all_topics


# --- consume diagnosis -----------------------------------------------------


def broker_rtt(stats: List[dict], api: str = "Fetch") -> dict:
    """Request count, bytes and the mean request round trip to broker node 1 from librdkafka stats."""
    last = None
    num = den = 0.0
    for s in stats:
        for b in s.get("brokers", {}).values():
            if b.get("nodeid") != NODE_ID:
                continue
            rtt = b.get("rtt", {})
            if rtt.get("cnt"):
                num += rtt["avg"] * rtt["cnt"]
                den += rtt["cnt"]
            last = b
    if last is None:
        return {}
    n = last.get("req", {}).get(api, 0)
    moved = last.get("rxbytes" if api == "Fetch" else "txbytes", 0)
    return {
        "rtt_mean_ms": num / den / 1000 if den else None,
        "requests": n,
        "bytes": moved,
        "bytes_per_request": moved / n if n else None,
    }


def perf_stat_events() -> List[str]:
    want = ["recvfrom", "sendto", "read", "write", "writev", "readv", "epoll_wait", "epoll_pwait",
            "futex", "sched_yield", "splice"]
    have = []
    for name in want:
        if os.path.exists("/sys/kernel/tracing/events/syscalls/sys_enter_%s" % name):
            have.append("syscalls:sys_enter_%s" % name)
    return ["task-clock", "context-switches", "cpu-migrations", "page-faults", "raw_syscalls:sys_enter"] + have


def under_tracer(tracer_argv: List[str], ready_marker: Optional[str], fn: Callable[[], dict],
                 log: str) -> Tuple[dict, str]:
    """Runs fn() while a tracer (perf stat / strace) is attached; returns fn's result and the
    tracer's stderr. The tracer is stopped with SIGINT, which makes both print their summary."""
    with open(log, "wb") as errf:
        proc = subprocess.Popen(tracer_argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errf, preexec_fn=_die_with_parent, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise BenchError("%s exited early: %s" % (tracer_argv[0], tail(log)))
            if ready_marker is None:
                time.sleep(1.0)
                break
            if ready_marker in tail(log, 50):
                break
            if time.monotonic() > deadline:
                raise BenchError("%s did not attach: %s" % (tracer_argv[0], tail(log)))
            time.sleep(0.05)
        result = fn()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return result, tail(log, 200)


def parse_perf_stat_csv(text: str) -> Dict[str, float]:
    out = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) >= 3:
            try:
                out[parts[2]] = float(parts[0])
            except ValueError:
                pass
    return out


def parse_strace_c(path: str) -> List[dict]:
    rows = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) not in (4, 5) or parts[0] in ("syscall",) or parts[0].startswith("-"):
                    continue
                try:
                    rows.append({"syscall": parts[0], "calls": int(parts[1]),
                                 "errors": int(parts[2]) if len(parts) == 5 else 0,
                                 "seconds": float(parts[-2]), "pct_time": float(parts[-1])})
                except ValueError:
                    continue
    except OSError:
        pass
    return rows


# Larger fetches; the local queue limits are raised with them, or librdkafka would pause fetching
# for fetch.queue.backoff.ms (1 s) whenever 100k records / 64 MiB sit unread, which 8 MiB fetches
# reach quickly on the faster side.
DIAG_BIG_FETCH = {"max.partition.fetch.bytes": 8 * MIB, "fetch.max.bytes": 64 * MIB,
                  "queued.min.messages": 10_000_000, "queued.max.messages.kbytes": 2_000_000}
DIAG_BROKER_BUFFERS = ["socket.send.buffer.bytes=1048576", "socket.receive.buffer.bytes=1048576"]


def diag_runs(stack: Stack, topic: str, expected: int, plan: List[Tuple[str, str, str]], args,
              pool: List[bytes], budget: Budget, first_index: int) -> List[dict]:
    """Runs (kind, variant, side) with librdkafka statistics on; one dict per run."""
    runs = []
    for i, (kind, variant, side) in enumerate(plan):
        stats: List[dict] = []
        with Meter(stack) as meter:
            if kind == "consume":
                # Statistics stop at the last record (they are served from consume() calls), and
                # the meter's mark keeps the trailing long-poll Fetch out of the proxy's figure.
                extra = DIAG_BIG_FETCH if variant == "8 MiB fetches" else None
                r = consume_throughput(stack.bootstrap(side), topic, expected,
                                       min(120.0, budget.left()), 0, stats, extra, meter.mark)
            else:
                r = produce_throughput(stack.bootstrap(side), "%s-p%d" % (topic, first_index + i),
                                       args.records, pool, min(120.0, budget.left()), stats)
        r = {"kind": kind, "variant": variant, "side": side, "mb_per_s": r["mb_per_s"],
             "seconds": r["seconds"], "payload_bytes": r["payload_bytes"]}
        r.update(broker_rtt(stats, "Fetch" if kind == "consume" else "Produce"))
        r["meter"] = meter.as_dict()
        runs.append(r)
        print("  diagnosis %s %-16s %-7s %s MB/s, mean rtt %s ms, %s bytes/request; wire-guard "
              "cpu user %.2f sys %.2f s"
              % (kind, variant, side, fmt(r["mb_per_s"]), fmt(r.get("rtt_mean_ms"), 3),
                 fmt(r.get("bytes_per_request"), 0), r["meter"]["proxy_user_s"],
                 r["meter"]["proxy_sys_s"]), flush=True)
    return runs


def perf_stat_run(stack: Stack, ddir: str, label: str, fn: Callable[[], dict]) -> dict:
    """fn() under `perf stat` on wire-guard: counts, per MB of record values and per request."""
    log = os.path.join(ddir, "perf-stat-%s.txt" % re.sub(r"\W+", "-", label))
    try:
        with Meter(stack) as meter:
            r, text = under_tracer(["perf", "stat", "-x,", "-e", ",".join(perf_stat_events()),
                                    "-p", str(stack.proxy.pid)], None, fn, log)
    except BenchError as e:
        return {"label": label, "error": str(e)}
    counts = parse_perf_stat_csv(text)
    mb = r["payload_bytes"] / MB
    m = meter.as_dict()
    reqs = m["proxy_requests"]
    out = {"label": label, "mb_per_s": r.get("mb_per_s"), "payload_mb": mb, "meter": m,
           "counts": counts, "requests": reqs,
           "per_mb": {k: v / mb for k, v in counts.items()},
           "per_request": {k: v / reqs for k, v in counts.items()} if reqs else {}}
    if "p50_ms" in r:
        out.update({k: r[k] for k in ("p50_ms", "p99_ms", "p999_ms")})
    print("  diagnosis perf stat (%s): %s" % (label, ", ".join(
        "%s %.2f/MB" % (k.replace("syscalls:sys_enter_", ""), v)
        for k, v in out["per_mb"].items() if v)), flush=True)
    return out


def consume_diagnosis(args, pool: List[bytes], workdir: str, run_id: str, budget: Budget,
                      broker: Broker) -> dict:
    """Where the proxied consume loses time.

    On the warm broker with a fresh proxy: single-client consume and produce runs, direct and proxied
    alternating, with librdkafka's per-request round trips; the same with 8 MiB fetches; wire-guard
    under perf stat (syscall tracepoints) and strace -c during a consume and under perf stat during
    a fixed-rate produce; then, on a second (warmed) broker whose socket buffers are 1 MiB instead
    of Kafka's 100 KiB default, the consume runs again.
    """
    d: dict = {"records": args.records}
    ddir = os.path.join(workdir, "diagnosis")
    os.makedirs(ddir)
    expected = args.records + 1
    have_perf = shutil.which("perf") is not None

    def prepare(stack: Stack, topic: str, produce_topics: int) -> None:
        create_topics(stack.bootstrap("direct"),
                      [topic] + ["%s-p%d" % (topic, i) for i in range(produce_topics)], 1, 60)
        produce_throughput(stack.bootstrap("direct"), topic, args.records, pool,
                           min(180.0, budget.left()))
        for side in ("direct", "proxied"):  # untimed warm-up of the read path
            consume_throughput(stack.bootstrap(side), topic, expected, min(120.0, budget.left()), 0)

    def proxied_consume(stack: Stack, topic: str) -> Callable[[], dict]:
        return lambda: consume_throughput(stack.bootstrap("proxied"), topic, expected,
                                          min(180.0, budget.left()), 0)

    stack = Stack(args, os.path.join(ddir, "default"), broker)
    try:
        topic = "bench-%s-diag" % run_id
        plan = [("consume", "default", side) for side in
                ("direct", "proxied", "proxied", "direct", "direct", "proxied")]
        plan += [("consume", "8 MiB fetches", side) for side in ("proxied", "direct", "direct", "proxied")]
        plan += [("produce", "default", side) for side in ("direct", "proxied", "proxied", "direct")]
        prepare(stack, topic, len(plan))
        d["runs"] = diag_runs(stack, topic, expected, plan, args, pool, budget, 0)
        if have_perf:
            d["perf_consume"] = perf_stat_run(stack, ddir, "consume", proxied_consume(stack, topic))
            lat_topic = "%s-p0" % topic
            d["perf_latency"] = perf_stat_run(
                stack, ddir, "fixed-rate produce",
                lambda: produce_latency(stack.bootstrap("proxied"), lat_topic, args.latency_rate,
                                        5.0, pool, min(60.0, budget.left())))
        if shutil.which("strace"):
            out = os.path.join(ddir, "strace-c.txt")
            try:
                with Meter(stack) as meter:
                    r, _ = under_tracer(
                        ["strace", "-c", "-f", "-U", "name,calls,errors,total-time,time-percent",
                         "-o", out, "-p", str(stack.proxy.pid)], "attached",
                        proxied_consume(stack, topic), os.path.join(ddir, "strace.log"))
                rows = parse_strace_c(out)
                mb = r["payload_bytes"] / MB
                for row in rows:
                    row["calls_per_mb"] = row["calls"] / mb
                d["strace"] = {"mb_per_s": r["mb_per_s"], "payload_mb": mb, "meter": meter.as_dict(),
                               "rows": rows}
                print("  diagnosis strace -c: %s MB/s (traced); top: %s" % (fmt(r["mb_per_s"]), ", ".join(
                    "%s %.1f/MB" % (x["syscall"], x["calls_per_mb"]) for x in rows[:6])), flush=True)
            except BenchError as e:
                d["strace"] = {"error": str(e)}
        d["proxy_log"] = proxy_log_summary(stack.proxy.log)
    finally:
        stack.stop()

    big = Broker(args, os.path.join(ddir, "big-buffers-broker"), DIAG_BROKER_BUFFERS)
    stack = None
    try:
        warm = argparse.Namespace(**vars(args))
        warm.broker_warmup_runs = max(1, args.broker_warmup_runs // 2)
        d["big_buffers_broker_warmup"] = warm_broker(warm, big, pool, budget, java=False)
        stack = Stack(args, os.path.join(ddir, "big-buffers"), big)
        topic = "bench-%s-diag-bigbuf" % run_id
        prepare(stack, topic, 0)
        plan = [("consume", "broker buffers 1 MiB", side)
                for side in ("direct", "proxied", "proxied", "direct", "direct", "proxied")]
        d["runs"] += diag_runs(stack, topic, expected, plan, args, pool, budget, 0)
        if have_perf:
            d["perf_consume_bigbuf"] = perf_stat_run(stack, ddir, "consume, broker buffers 1 MiB",
                                                     proxied_consume(stack, topic))
    finally:
        if stack is not None:
            stack.stop()
        big.stop()
    return d


# --- summary ---------------------------------------------------------------


def median(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def other_cores(result: dict) -> float:
    m = result["meter"]
    return m["other_cpu_s"] / m["wall_s"] if m["wall_s"] else 0.0


# (key, phase, field, kind): kind "ratio" for throughput, "delta" for latency, "info" for
# figures shown per side without a target.
METRICS = [
    ("rdk_produce_mb_per_s", "rdk_produce", "mb_per_s", "ratio"),
    ("rdk_consume_mb_per_s", "rdk_consume", "mb_per_s", "ratio"),
    ("java_produce_mb_per_s", "java_produce", "mb_per_s", "ratio"),
    ("java_consume_mb_per_s", "java_consume", "mb_per_s", "ratio"),
    ("java_consume_join_ms", "java_consume", "rebalance_ms", "delta"),
    ("latency_p50_ms", "latency", "p50_ms", "delta"),
    ("latency_p99_ms", "latency", "p99_ms", "delta"),
    ("latency_p999_ms", "latency", "p999_ms", "delta"),
    ("fanout_mb_per_s", "fanout_tput", "mb_per_s", "ratio"),
    ("fanout_latency_p50_ms", "fanout_latency", "p50_ms", "delta"),
    ("fanout_latency_p99_ms", "fanout_latency", "p99_ms", "delta"),
    ("fanout_latency_p999_ms", "fanout_latency", "p999_ms", "delta"),
]


def summarize(rounds: List[dict]) -> dict:
    by_side = {s: [r for r in rounds if r["side"] == s] for s in ("direct", "proxied")}
    summary: dict = {}
    for key, phase, field, kind in METRICS:
        vals = {side: [r[phase][field] for r in by_side[side]
                       if phase in r and r[phase].get(field) is not None]
                for side in ("direct", "proxied")}
        entry: dict = {"direct": median(vals["direct"]), "proxied": median(vals["proxied"]),
                       "kind": kind}
        for side in ("direct", "proxied"):
            entry[side + "_range"] = [min(vals[side]), max(vals[side])] if vals[side] else None
        # Within-round comparison, less exposed to drift between rounds; "quiet" pairs are those
        # where other work on the machine stayed under QUIET_OTHER_CORES during both phases.
        paired, quiet = [], []
        for rd in by_side["direct"]:
            rp = next((r for r in by_side["proxied"] if r["round"] == rd["round"]), None)
            if rp is None or phase not in rd or phase not in rp:
                continue
            a, b = rd[phase].get(field), rp[phase].get(field)
            if a is None or b is None:
                continue
            if kind == "ratio":
                if not a:
                    continue
                v = b / a
            else:
                v = b - a
            paired.append(v)
            if max(other_cores(rd[phase]), other_cores(rp[phase])) < QUIET_OTHER_CORES:
                quiet.append(v)
        entry["paired"] = paired
        entry["paired_median"] = median(paired)
        entry["paired_range"] = [min(paired), max(paired)] if paired else None
        entry["quiet_pairs"] = len(quiet)
        entry["quiet_paired_median"] = median(quiet)
        summary[key] = entry

    # wire-guard cost: over the bulk (throughput) phases, where per-request overhead is spread
    # over large batches, over the fixed-rate phases, and over everything.
    groups = {
        "bulk": ("rdk_produce", "rdk_consume", "java_produce", "java_consume", "fanout_tput"),
        "consume": ("rdk_consume", "java_consume"),
        "produce": ("rdk_produce", "java_produce", "fanout_tput"),
        "latency": ("latency", "fanout_latency"),
        "all": PHASES,
    }
    for label, phases in groups.items():
        cpu = 0.0
        wire = payload = requests = 0
        for r in by_side["proxied"]:
            for phase in phases:
                if phase not in r:
                    continue
                m = r[phase]["meter"]
                cpu += m["proxy_cpu_s"]
                wire += sum(m["proxy_bytes"].values())
                payload += r[phase].get("payload_bytes", 0)
                requests += m["proxy_requests"]
        summary["proxy_cost_" + label] = {
            "requests": requests,
            "cpu_us_per_request": cpu / requests * 1e6 if requests else None,
            "cpu_s": cpu,
            "wire_bytes": wire,
            "payload_bytes": payload,
            "cpu_s_per_gb_wire": cpu / (wire / GB) if wire else None,
            "cpu_s_per_gb_payload": cpu / (payload / GB) if payload else None,
        }

    def max_of(phases, field):
        vals = [r[ph]["meter"][field] for r in by_side["proxied"] for ph in phases if ph in r]
        return max(vals) if vals else None

    single = ("rdk_produce", "rdk_consume", "java_produce", "java_consume", "latency")
    summary["proxy_rss"] = {
        "single_client_max_rss_kib": max_of(single, "proxy_max_rss_kib"),
        "fanout_max_rss_kib": max_of(("fanout_tput", "fanout_latency"), "proxy_max_rss_kib"),
        "fanout_tput_max_rss_kib": max_of(("fanout_tput",), "proxy_max_rss_kib"),
        "fanout_latency_max_rss_kib": max_of(("fanout_latency",), "proxy_max_rss_kib"),
        "fanout_latency_max_connections": max_of(("fanout_latency",), "proxy_max_connections"),
        "fanout_max_connections": max_of(("fanout_tput", "fanout_latency"), "proxy_max_connections"),
    }

    # How busy the box was: CPU seconds of client + broker + proxy per wall second, per phase.
    busy: dict = {}
    for side in ("direct", "proxied"):
        for phase in PHASES:
            vals = []
            for r in by_side[side]:
                if phase in r:
                    m = r[phase]["meter"]
                    used = m["client_cpu_s"] + m["broker_cpu_s"] + (m["proxy_cpu_s"] if side == "proxied" else 0)
                    vals.append(used / m["wall_s"] if m["wall_s"] else None)
            busy.setdefault(phase, {})[side] = median(vals)
    summary["cores_busy"] = busy
    other = [r[ph]["meter"]["other_cpu_s"] / r[ph]["meter"]["wall_s"]
             for r in rounds for ph in PHASES if ph in r and r[ph]["meter"]["wall_s"]]
    summary["other_cores_busy"] = {"median": median(other), "max": max(other) if other else None}
    errors = {}
    for r in by_side["proxied"]:
        for ph in PHASES:
            if ph in r:
                for k, v in r[ph]["meter"]["proxy_errors"].items():
                    errors[k] = errors.get(k, 0) + v
    summary["proxy_connection_errors"] = errors
    summary["client_errors"] = sorted({e for r in rounds for ph in PHASES if ph in r
                                       for e in r[ph].get("client_errors", [])})
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
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def kafka_version(libs: str) -> str:
    try:
        for name in sorted(os.listdir(libs)):
            m = re.match(r"kafka-clients-(.+)\.jar$", name)
            if m:
                return "Apache Kafka %s" % m.group(1)
    except OSError:
        pass
    return "Apache Kafka (unknown version)"


def git_state() -> str:
    """The commit measured, and whether wire-guard's sources differ from it."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "wire-guard"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return "%s%s" % (head or "unknown", " (wire-guard/ modified)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def fmt(v: Optional[float], digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else "%.*f" % (digits, v)


LABELS = {
    "rdk_produce_mb_per_s": "produce MB/s, librdkafka (1 producer)",
    "rdk_consume_mb_per_s": "consume MB/s, librdkafka (1 consumer, assign)",
    "java_produce_mb_per_s": "produce MB/s, Java ProducerPerformance",
    "java_consume_mb_per_s": "consume MB/s, Java ConsumerPerformance (fetch rate)",
    "java_consume_join_ms": "Java consumer group join (ms, info)",
    "latency_p50_ms": "produce latency p50 (ms), librdkafka @ %(rate)s/s",
    "latency_p99_ms": "produce latency p99 (ms), librdkafka @ %(rate)s/s",
    "latency_p999_ms": "produce latency p99.9 (ms), librdkafka @ %(rate)s/s",
    "fanout_mb_per_s": "produce MB/s, %(n)d producers at once",
    "fanout_latency_p50_ms": "produce latency p50 (ms), %(n)d producers @ %(frate)s/s each",
    "fanout_latency_p99_ms": "produce latency p99 (ms), %(n)d producers @ %(frate)s/s each",
    "fanout_latency_p999_ms": "produce latency p99.9 (ms), %(n)d producers @ %(frate)s/s each",
}
TARGET_ROWS = {"rdk_produce_mb_per_s", "rdk_consume_mb_per_s", "java_produce_mb_per_s",
               "java_consume_mb_per_s", "fanout_mb_per_s", "latency_p99_ms", "fanout_latency_p99_ms"}


def verdict(key: str, e: dict) -> Tuple[str, str]:
    """(target text, verdict) for a row; the verdict is on the median of the paired figures."""
    if key not in TARGET_ROWS:
        return "", ""
    pm, pr = e.get("paired_median"), e.get("paired_range")
    if e["kind"] == "ratio":
        tgt = "≥ %.2f×" % TARGET_THROUGHPUT_RATIO
        if pm is None:
            return tgt, "n/a"
        v = "met" if pm >= TARGET_THROUGHPUT_RATIO else "**missed**"
        if pr and pr[0] < TARGET_THROUGHPUT_RATIO <= pr[1]:
            v += " (rounds on both sides)"
        return tgt, v
    tgt = "< +%.1f ms" % TARGET_ADDED_P99_MS
    if pm is None:
        return tgt, "n/a"
    v = "met" if pm < TARGET_ADDED_P99_MS else "**missed**"
    if pr and pr[0] < TARGET_ADDED_P99_MS <= pr[1]:
        v += " (rounds on both sides)"
    return tgt, v


def main_table(report: dict) -> List[str]:
    s = report["summary"]
    p = report["parameters"]
    subs = {"rate": "%g" % p["latency_rate"], "n": p["fanout_producers"], "frate": "%g" % p["fanout_rate"]}
    lines = [
        "| metric | direct | via wire-guard | paired per round: median [min – max] | target | verdict |",
        "|---|---:|---:|---:|---|---|",
    ]
    for key, _phase, _field, kind in METRICS:
        e = s[key]
        digits = 0 if key == "java_consume_join_ms" else (1 if kind == "ratio" else 3)
        pr = e.get("paired_range")
        if kind == "ratio":
            paired = "n/a" if e["paired_median"] is None else "%.3f× [%.3f – %.3f]" % (
                e["paired_median"], pr[0], pr[1])
        else:
            d = 0 if key == "java_consume_join_ms" else 3
            paired = "n/a" if e["paired_median"] is None else "%+.*f ms [%+.*f – %+.*f]" % (
                d, e["paired_median"], d, pr[0], d, pr[1])
        tgt, v = verdict(key, e)
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            LABELS[key] % subs, fmt(e["direct"], digits), fmt(e["proxied"], digits), paired, tgt, v))
    cost = s["proxy_cost_bulk"]
    rss = s["proxy_rss"]
    kib = lambda v: "n/a" if not v else "%.1f MiB" % (v / 1024)  # noqa: E731
    lines.append("| wire-guard CPU per GB forwarded, throughput phases | | %s s | | | |"
                 % fmt(cost["cpu_s_per_gb_wire"], 2))
    lines.append("| wire-guard CPU per GB forwarded, consume / produce phases | | %s s / %s s | | | |"
                 % (fmt(s["proxy_cost_consume"]["cpu_s_per_gb_wire"], 2),
                    fmt(s["proxy_cost_produce"]["cpu_s_per_gb_wire"], 2)))
    lines.append("| wire-guard CPU per request, fixed-rate phases | | %s µs | | | |"
                 % fmt(s["proxy_cost_latency"]["cpu_us_per_request"], 1))
    lines.append("| wire-guard peak RSS, single-client phases (VmRSS sampled) | | %s | | | |"
                 % kib(rss["single_client_max_rss_kib"]))
    lines.append("| wire-guard peak RSS, %d producers at %g/s each (1 KiB requests; %s client "
                 "connections) | | %s | | | |"
                 % (p["fanout_producers"], p["fanout_rate"],
                    rss.get("fanout_latency_max_connections") or "n/a",
                    kib(rss.get("fanout_latency_max_rss_kib"))))
    lines.append("| wire-guard peak RSS, %d producers flat out (requests up to 1 MB; up to %s client "
                 "connections) | | %s | | | |"
                 % (p["fanout_producers"], rss["fanout_max_connections"] or "n/a",
                    kib(rss.get("fanout_tput_max_rss_kib"))))
    lines.append("| wire-guard peak RSS over a round (VmHWM, max of rounds) | | %s | | | |"
                 % kib(report["proxy_peak_rss_kib"]))
    return lines


def diagnosis_lines(d: dict) -> List[str]:
    lines = ["## Consume diagnosis", ""]
    if d.get("error"):
        lines += ["Diagnosis did not finish: %s" % d["error"], ""]
    runs = d.get("runs", [])
    if runs:
        lines.append("One librdkafka client at a time, %d records of 1 KiB, direct and proxied "
                     "alternating on the warm broker with a fresh wire-guard (the 1 MiB-buffer "
                     "broker is a second one, warmed up likewise). librdkafka keeps one Fetch in "
                     "flight per broker and Kafka serves a connection's requests one at a time, so "
                     "each Fetch's round trip bounds consume throughput. Round trip = librdkafka "
                     "statistics (`rtt`, mean over a run, broker node 1); broker time = wire-guard's "
                     "upstream latency histogram (request forwarded to first response bytes back); "
                     "wire-guard CPU per MB of record values from /proc. Medians over the runs "
                     "(n per side):" % d["records"])
        lines.append("")
        lines.append("| phase | direct MB/s | proxied MB/s | ratio | bytes per request | round trip "
                     "direct / proxied (ms) | broker time via wire-guard (ms) | wire-guard CPU "
                     "user / sys per MB (ms) | n |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        groups: Dict[Tuple[str, str], List[dict]] = {}
        for r in runs:
            groups.setdefault((r["kind"], r["variant"]), []).append(r)
        for (kind, variant), rs in groups.items():
            def med(side: str, key: str) -> Optional[float]:
                return median([r.get(key) for r in rs if r["side"] == side])
            prox = [r for r in rs if r["side"] == "proxied"]
            up_key = "proxy_fetch_upstream_ms_mean" if kind == "consume" else "proxy_produce_upstream_ms_mean"
            up = median([r["meter"].get(up_key) for r in prox])
            user = median([1000 * r["meter"]["proxy_user_s"] / (r["payload_bytes"] / MB) for r in prox])
            sys_ = median([1000 * r["meter"]["proxy_sys_s"] / (r["payload_bytes"] / MB) for r in prox])
            dm, pm = med("direct", "mb_per_s"), med("proxied", "mb_per_s")
            lines.append("| %s%s | %s | %s | %s | %s | %s / %s | %s | %s / %s | %d |" % (
                kind, "" if variant == "default" else " (%s)" % variant, fmt(dm), fmt(pm),
                "n/a" if not dm or pm is None else "%.3f×" % (pm / dm),
                fmt(med("proxied", "bytes_per_request"), 0), fmt(med("direct", "rtt_mean_ms"), 2),
                fmt(med("proxied", "rtt_mean_ms"), 2), fmt(up, 2), fmt(user, 3), fmt(sys_, 3),
                len(prox)))
        lines.append("")
        lines.append("Every run (in order):")
        lines.append("")
        lines.append("| run | phase | side | MB/s | round trip (ms) | bytes per request |")
        lines.append("|---:|---|---|---:|---:|---:|")
        for i, r in enumerate(runs):
            lines.append("| %d | %s%s | %s | %s | %s | %s |" % (
                i + 1, r["kind"], "" if r["variant"] == "default" else " (%s)" % r["variant"],
                r["side"], fmt(r["mb_per_s"]), fmt(r.get("rtt_mean_ms"), 3),
                fmt(r.get("bytes_per_request"), 0)))
        lines.append("")
    perf = [x for x in (d.get("perf_consume"), d.get("perf_consume_bigbuf"), d.get("perf_latency")) if x]
    if perf:
        lines.append("`perf stat -p <wire-guard>` (syscall tracepoints and software counters; "
                     "negligible overhead) during one proxied run each:")
        lines.append("")
        lines.append("| counter | %s |" % " | ".join(
            "%s, per MB" % x["label"] if "latency" not in x.get("label", "") and "produce" not in x["label"]
            else "%s, per request" % x["label"] for x in perf))
        lines.append("|---|%s" % ("---:|" * len(perf)))

        def val(x: dict, key: str) -> str:
            if x.get("error"):
                return "error"
            per = x["per_request"] if "produce" in x["label"] else x["per_mb"]
            v = per.get(key)
            if v is None:
                return "n/a"
            if key == "task-clock":
                # perf reports task-clock in ms; per request, show microseconds.
                return ("%.3f ms" % v) if per is x["per_mb"] else ("%.0f µs" % (v * 1000))
            return "%.2f" % v
        keys = ["task-clock", "context-switches", "raw_syscalls:sys_enter"] + [
            k for k in perf_stat_events() if k.startswith("syscalls:")]
        for k in keys:
            if all(not x.get("counts", {}).get(k) for x in perf):
                continue
            lines.append("| %s | %s |" % (k.replace("syscalls:sys_enter_", "syscall ").replace(
                "raw_syscalls:sys_enter", "all syscalls"), " | ".join(val(x, k) for x in perf)))
        lines.append("| throughput during the run | %s |" % " | ".join(
            "error" if x.get("error") else ("%s MB/s" % fmt(x["mb_per_s"]) if "produce" not in x["label"]
                                            else "p50 %.3f / p99 %.3f ms" % (x["p50_ms"], x["p99_ms"]))
            for x in perf))
        lines.append("| wire-guard CPU user / sys (/proc) | %s |" % " | ".join(
            "error" if x.get("error") else "%.2f / %.2f s" % (x["meter"]["proxy_user_s"],
                                                             x["meter"]["proxy_sys_s"]) for x in perf))
        lines.append("")
    st = d.get("strace")
    if st and not st.get("error"):
        lines.append("`strace -c -f -p <wire-guard>` during one proxied consume (%.1f MB at %s MB/s "
                     "while traced; strace slows every syscall, so only the counts carry over):"
                     % (st["payload_mb"], fmt(st["mb_per_s"])))
        lines.append("")
        lines.append("| syscall | calls | per MB | errors | % of syscall time |")
        lines.append("|---|---:|---:|---:|---:|")
        for row in st["rows"][:8]:
            lines.append("| %s | %d | %.1f | %d | %.1f |" % (row["syscall"], row["calls"],
                                                          row["calls_per_mb"], row["errors"],
                                                          row["pct_time"]))
        lines.append("")
    elif st:
        lines += ["strace: %s" % st["error"], ""]
    return lines


def render_markdown(report: dict) -> str:
    s = report["summary"]
    m = report["machine"]
    p = report["parameters"]
    lines = ["# wire-guard passthrough benchmark (Apache Kafka)", ""]
    lines.append("Machine: %d vCPU (%s), %s GiB RAM, kernel %s; %s. Broker: %s (single KRaft node, "
                 "1 GiB heap); clients: confluent-kafka %s (librdkafka %s) and Kafka's Java perf "
                 "tools (kafka-clients %s, Java %s); %s, release build, tree %s. Client, broker "
                 "and proxy share the cores."
                 % (m["nproc"], m["cpu_model"], m["mem_gib"], m["kernel"], report["started_at"],
                    report["versions"]["kafka"], m["confluent_kafka"], m["librdkafka"],
                    report["versions"]["kafka"].split()[-1], report["versions"]["java"],
                    report["versions"]["wire_guard"], report["versions"]["tree"]))
    lines.append("")
    wu = report.get("broker_warmup") or {}
    lines.append("%d rounds (%d completed) against one broker, warmed up untimed first (%s produce "
                 "runs of %s records%s, %s s); a fresh wire-guard and fresh topics per round; within "
                 "a round each phase runs direct and proxied back to back, the order alternating "
                 "by phase and round. Direct / via wire-guard = median over rounds; paired = each round's "
                 "proxied/direct ratio (throughput) or proxied-direct difference (latency), median "
                 "and range; verdicts use the paired median. Throughput: %d records of %d random "
                 "bytes (librdkafka linger.ms=5; Java client defaults; acks=all, no compression), "
                 "%d records for the Java tools. Latency: %g records/s for %g s, linger.ms=0, "
                 "acks=all, client polling between sends. Fan-out: %d producers (own thread and "
                 "Producer each), %d records in all as fast as they go, then %d fresh producers "
                 "at %g records/s each for %g s. MB = 10^6 bytes of record values."
                 % (p["rounds"], report["rounds_completed"], wu.get("produce_runs", "?"),
                    wu.get("records_per_run", "?"), " plus a Java producer and consumer run"
                    if wu.get("java") else "", wu.get("seconds", "?"),
                    p["records"], p["record_bytes"],
                    p["java_records"], p["latency_rate"], p["latency_seconds"], p["fanout_producers"],
                    p["fanout_records"], p["fanout_producers"], p["fanout_rate"], p["latency_seconds"]))
    lines.append("")
    lines += main_table(report)
    lines.append("")
    busy = s["cores_busy"]
    lines.append("Cores busy (client + broker [+ wire-guard] CPU s per wall s, of %d), direct / "
                 "proxied: %s." % (m["nproc"], "; ".join(
                     "%s %s / %s" % (ph, fmt(busy[ph]["direct"], 2), fmt(busy[ph]["proxied"], 2))
                     for ph in PHASES if ph in busy)))
    lines.append("")
    oth = s.get("other_cores_busy", {})
    lines.append("Other work on the machine during the timed phases (from /proc/stat, outside "
                 "client, broker and proxy): median %s cores, worst phase %s cores. Load average "
                 "(1/5/15 min) before the run %s, after %s."
                 % (fmt(oth.get("median"), 2), fmt(oth.get("max"), 2),
                    " ".join("%.2f" % x for x in m["loadavg_before"] or []),
                    " ".join("%.2f" % x for x in m["loadavg_after"] or [])))
    if oth.get("median") is not None and oth["median"] > 0.2:
        lines.append("")
        lines.append("**Other work on the machine used %.2f cores (median over the timed "
                     "phases): these numbers measure contention as much as wire-guard.**"
                     % oth["median"])
    lines.append("")
    bulk = s["proxy_cost_bulk"]
    lines.append("CPU per GB = wire-guard utime+stime (/proc/<pid>/stat) over the proxied phases "
                 "divided by the bytes it forwarded per wire_guard_bytes_total (frames, both "
                 "directions): throughput phases %.2f s for %.1f MB forwarded (%s s per GB of "
                 "record values). wire-guard connection errors (metrics): %s. Client-reported "
                 "errors: %s."
                 % (bulk["cpu_s"], bulk["wire_bytes"] / MB, fmt(bulk["cpu_s_per_gb_payload"], 2),
                    s["proxy_connection_errors"] or "none",
                    "; ".join(s["client_errors"][:5]) or "none"))
    logs = report.get("proxy_logs", [])
    warn = sum(lg["levels"].get("WARN", 0) + lg["levels"].get("ERROR", 0) for lg in logs)
    lines.append("")
    lines.append("wire-guard log (all rounds): %d WARN/ERROR lines%s." % (
        warn, "" if not warn else "; e.g. " + "; ".join(
            x for lg in logs for x in lg["warn_error_samples"])[:600]))
    lines.append("")
    if report.get("diagnosis"):
        lines += diagnosis_lines(report["diagnosis"])
    lines.append("## Per round")
    lines.append("")
    lines.append("| round | side | rdk prod MB/s | rdk cons MB/s | java prod MB/s | java cons MB/s "
                 "| lat p50 / p99 / p99.9 ms | fan-out MB/s | fan-out p50 / p99 ms | "
                 "wire-guard CPU s | other CPU s |")
    lines.append("|---:|---|---:|---:|---:|---:|---|---:|---|---:|---:|")
    for r in report["rounds"]:
        def g(phase: str, key: str, d: int = 1) -> str:
            return fmt(r[phase].get(key), d) if phase in r else "n/a"
        cpu_wg = sum(r[ph]["meter"]["proxy_cpu_s"] for ph in PHASES if ph in r)
        cpu_o = sum(r[ph]["meter"]["other_cpu_s"] for ph in PHASES if ph in r)
        lines.append("| %d | %s | %s | %s | %s | %s | %s / %s / %s | %s | %s / %s | %.2f | %.2f |" % (
            r["round"], r["side"], g("rdk_produce", "mb_per_s"), g("rdk_consume", "mb_per_s"),
            g("java_produce", "mb_per_s"), g("java_consume", "mb_per_s"),
            g("latency", "p50_ms", 3), g("latency", "p99_ms", 3), g("latency", "p999_ms", 3),
            g("fanout_tput", "mb_per_s"), g("fanout_latency", "p50_ms", 3),
            g("fanout_latency", "p99_ms", 3), cpu_wg, cpu_o))
    lines.append("")
    lines.append("Reproduce: `%s` (%s, %.0f s wall)." % (report["command"], report["started_at"],
                                                        report["wall_s"]))
    if report.get("error"):
        lines.append("")
        lines.append("**Incomplete run:** %s" % report["error"])
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wire-guard", required=True, help="wire-guard release binary")
    ap.add_argument("--kafka-libs", default=os.environ.get("KAFKA_LIBS"),
                    help="Kafka jars (broker and perf tools) [$KAFKA_LIBS]")
    ap.add_argument("--kafka-broker", default=os.path.join(ROOT, "scripts", "kafka-broker"),
                    help="broker launcher script")
    ap.add_argument("--broker-heap", default="1g")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=300_000, help="records per librdkafka throughput run")
    ap.add_argument("--java-records", type=int, default=100_000, help="records per Java perf-tool run")
    ap.add_argument("--warmup-records", type=int, default=50_000,
                    help="untimed records produced and read on each side at the start of a round")
    ap.add_argument("--broker-warmup-runs", type=int, default=8,
                    help="untimed produce runs of --records each on the fresh broker before round 0")
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--latency-rate", type=float, default=1000.0, help="records/s")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--fanout-producers", type=int, default=200)
    ap.add_argument("--fanout-records", type=int, default=200_000, help="records in all, fan-out throughput")
    ap.add_argument("--fanout-rate", type=float, default=10.0, help="records/s per producer, fan-out latency")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    ap.add_argument("--diagnose", choices=("auto", "always", "never"), default="auto",
                    help="consume diagnosis after the rounds (auto: when a consume ratio < 0.95)")
    ap.add_argument("--quiet-s", type=float, default=0.5,
                    help="untimed read-on after the expected count, to catch extras")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--budget-s", type=float, default=760.0, help="wall-clock budget of the rounds")
    ap.add_argument("--quiet-wait-s", type=float, default=30.0,
                    help="longest wait for the machine to go idle before starting")
    ap.add_argument("--pair-quiet-wait-s", type=float, default=10.0,
                    help="longest wait for other work to calm down before each phase pair")
    ap.add_argument("--total-quiet-wait-s", type=float, default=60.0,
                    help="all those waits together at most")
    ap.add_argument("--quiet-cores", type=float, default=0.3,
                    help="other work below this many cores counts as calm")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if not args.kafka_libs:
        ap.error("--kafka-libs or $KAFKA_LIBS is required")
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        ap.error("unknown phases: %s" % ", ".join(sorted(unknown)))

    # SIGTERM (e.g. from `timeout`) unwinds through the finally blocks below.
    def on_term(signum, frame):
        raise KeyboardInterrupt("interrupted by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    command = os.environ.get("WIRE_GUARD_BENCH_COMMAND") or " ".join(sys.argv)
    budget = Budget(args.budget_s)
    machine = machine_info()
    machine["loadavg_before"] = loadavg()
    quiet = wait_for_quiet(args.quiet_wait_s, 0.25)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    versions = {
        "kafka": kafka_version(args.kafka_libs),
        "java": tool_version([java_binary(), "-version"]),
        "wire_guard": tool_version([args.wire_guard, "--version"]),
        "tree": git_state(),
    }
    print("machine: %d x %s, kernel %s; load %s; %s" % (
        machine["nproc"], machine["cpu_model"], machine["kernel"], machine["loadavg_before"],
        versions["kafka"]), flush=True)
    pool = value_pool(args.record_bytes, args.seed)
    rounds: List[dict] = []
    proxy_logs: List[dict] = []
    error = None
    peak_rss = broker_peak_rss = None
    stack: Optional[Stack] = None
    broker: Optional[Broker] = None
    broker_warmup = None
    workdir = tempfile.mkdtemp(prefix="wire-guard-bench-")
    round_dir = workdir
    diagnosis = None
    round_walls: List[float] = []
    gate = QuietGate(args.pair_quiet_wait_s, args.total_quiet_wait_s, args.quiet_cores)

    def close_stack() -> None:
        nonlocal stack, peak_rss, broker_peak_rss
        if stack is None:
            return
        pk = stack.peaks()
        if pk["proxy_vmhwm_kib"]:
            peak_rss = max(peak_rss or 0, pk["proxy_vmhwm_kib"])
        if pk["broker_vmhwm_kib"]:
            broker_peak_rss = max(broker_peak_rss or 0, pk["broker_vmhwm_kib"])
        s, stack = stack, None
        s.stop()
        if s.proxy is not None:
            proxy_logs.append(proxy_log_summary(s.proxy.log))

    try:
        run_id = "%x" % random.SystemRandom().getrandbits(32)
        broker = Broker(args, os.path.join(workdir, "broker"))
        print("kafka on %s; warming it up (untimed)" % broker.bootstrap(), flush=True)
        broker_warmup = warm_broker(args, broker, pool, budget, java="java_produce" in args.phases)
        print("warm-up done in %.0f s" % broker_warmup["seconds"], flush=True)
        for rnd in range(args.rounds):
            if round_walls and budget.left() < 1.1 * max(round_walls) + 30:
                print("stopping after %d rounds: %.0f s of budget left" % (rnd, budget.left()),
                      flush=True)
                break
            t_round = time.monotonic()
            round_dir = os.path.join(workdir, "round-%d" % rnd)
            os.makedirs(round_dir)
            # One warm broker for the run; a fresh proxy and fresh topics per round, so no round
            # inherits another's connections, buffers or partitions.
            stack = Stack(args, round_dir, broker)
            print("round %d: kafka on %s, wire-guard on %s (node %d on port %d, admin %d); load %s"
                  % (rnd, stack.bootstrap("direct"), stack.bootstrap("proxied"), NODE_ID,
                     stack.node_port, stack.admin_port, loadavg()), flush=True)
            round_topics = run_round(args, stack, rnd, run_id, pool, budget, rounds, gate)
            close_stack()
            delete_topics(broker.bootstrap(), round_topics)
            round_walls.append(time.monotonic() - t_round)
    except (BenchError, KafkaException, KeyboardInterrupt, OSError) as e:
        error = "%s: %s" % (type(e).__name__, e)
        print("error: %s" % error, file=sys.stderr, flush=True)
    finally:
        keep = stack
        close_stack()
        if error:
            logs = [broker.log if broker else "", keep.proxy.log if keep and keep.proxy else ""]
            for log in logs:
                if log:
                    print("--- %s (tail)\n%s" % (log, tail(log)), file=sys.stderr)
        if error and broker is not None:
            broker_peak_rss = broker.vmhwm_kib()
            broker.stop()
            broker = None

    finished = [r for r in rounds if all(k in r for k in args.phases)]
    full_rounds = {rnd for rnd in {r["round"] for r in finished}
                   if sum(1 for r in finished if r["round"] == rnd) == 2}
    completed = [r for r in finished if r["round"] in full_rounds]
    summary = summarize(completed)

    consume_short = any((summary[k]["paired_median"] or 1) < TARGET_THROUGHPUT_RATIO
                        for k in ("rdk_consume_mb_per_s", "java_consume_mb_per_s"))
    if not error and (args.diagnose == "always" or (args.diagnose == "auto" and consume_short)):
        print("consume diagnosis", flush=True)
        diag_budget = Budget(max(240.0, budget.left() + 240.0))
        try:
            diagnosis = consume_diagnosis(args, pool, workdir, run_id, diag_budget, broker)
        except (BenchError, KafkaException, KeyboardInterrupt, OSError) as e:
            diagnosis = {"error": "%s: %s" % (type(e).__name__, e)}
            print("diagnosis error: %s" % diagnosis["error"], file=sys.stderr, flush=True)
    if broker is not None:
        broker_peak_rss = broker.vmhwm_kib()
        broker.stop()

    machine["loadavg_after"] = loadavg()
    report = {
        "started_at": started_at,
        "wall_s": round(time.monotonic() - budget.start, 1),
        "command": command,
        "machine": machine,
        "versions": versions,
        "parameters": {
            "rounds": args.rounds,
            "phases": args.phases,
            "records": args.records,
            "java_records": args.java_records,
            "record_bytes": args.record_bytes,
            "seed": args.seed,
            "warmup_records": args.warmup_records,
            "rdk_produce_conf": {"linger.ms": 5, "acks": "all", "compression.type": "none"},
            "latency_conf": {"linger.ms": 0, "acks": "all", "compression.type": "none"},
            "java_produce_props": {"acks": "all"},
            "latency_rate": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "fanout_producers": args.fanout_producers,
            "fanout_records": args.fanout_records,
            "fanout_rate": args.fanout_rate,
            "partitions": 1,
            "broker": "Apache Kafka, single KRaft node (scripts/kafka-broker), heap %s, one per run"
                      % args.broker_heap,
            "broker_warmup_runs": args.broker_warmup_runs,
        },
        "targets": {"throughput_ratio_min": TARGET_THROUGHPUT_RATIO,
                    "added_p99_ms_max": TARGET_ADDED_P99_MS},
        "rounds_completed": len(full_rounds),
        "start_gate": quiet,
        "summary": summary,
        "proxy_peak_rss_kib": peak_rss,
        "broker_peak_rss_kib": broker_peak_rss,
        "broker_warmup": broker_warmup,
        "proxy_logs": proxy_logs,
        "diagnosis": diagnosis,
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
    if error or (diagnosis or {}).get("error"):
        print("logs kept in %s" % workdir, file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
