"""registry-proxy benchmark: direct to the development registry and through the proxy, one run.

Starts the development registry, the OIDC provider (oauth2-mock-server, as in the tests) and
registry-proxy with the example policy, registers one schema, fetches a client_credentials
token, then drives wrk against both endpoints, direct and proxied:

- GET /schemas/ids/{id}       (served from the proxy's cache after the first request)
- POST /subjects/{subject}    (look a schema up; always forwarded)

Each pair runs twice: loaded (many connections; requests per second and latency under load)
and unloaded (one connection; the latency the proxy adds).

The token rows measure what authentication costs the proxy, in its own CPU time (from
/proc/PID/stat) per request, over one keep-alive connection sending GET /schemas/ids/{id}
(a cached read, so the token check dominates): the same token every time (a validated-token
cache hit), a fresh token every time (each one minted by the provider beforehand: a signature
verification per request), a fresh forged token every time (a valid token with its signature
altered: the work anyone without credentials can make the proxy do), and one forged token
replayed. The verification rate limit is lifted for these rows so every forged token is
verified; with the default limit most of them are answered 429 before any signature work.

Results go to bench/results/registry-proxy.{md,json}. Measures and reports; asserts nothing.
"""

import argparse
import base64
import http.client
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBJECT = "payments.bench-value"
SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Payment",
        "namespace": "example.payments",
        "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}],
    }
)
CLIENT = {"id": "payments-svc", "secret": "bench-secret", "sub": "payments-svc", "groups": ["payments"]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, ok=lambda status: True, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if ok(r.status):
                    return
        except urllib.error.HTTPError as e:
            if ok(e.code):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answering at {url}")


def request(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=body.encode() if body else None, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_wrk(output):
    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else None

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "rps": float(rps.group(1)) if rps else None,
        "p50_us": latency(50),
        "p99_us": latency(99),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def wrk(url, *, threads, connections, duration, token=None, lookup=None):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    env = dict(os.environ)
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if lookup:
        cmd += ["-s", str(ROOT / "bench/registry_proxy_lookup.lua")]
        env["BENCH_LOOKUP_BODY"] = lookup
    cmd.append(url)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    result = parse_wrk(out)
    if result["non_2xx"]:
        raise SystemExit(f"wrk saw {result['non_2xx']} error responses from {url}:\n{out}")
    return result


def proxy_cpu_seconds(pid):
    # utime and stime, fields 14 and 15 of /proc/PID/stat (after the parenthesised name).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mint_tokens(issuer, count):
    basic = base64.b64encode(f"{CLIENT['id']}:{CLIENT['secret']}".encode()).decode()
    conn = http.client.HTTPConnection(issuer.removeprefix("http://"), timeout=10)
    tokens = []
    for i in range(count):
        # The provider sets no jti: a distinct scope is what makes each token new.
        conn.request(
            "POST",
            "/token",
            f"grant_type=client_credentials&scope=schema_registry%20bench-{i}",
            {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        tokens.append(json.loads(conn.getresponse().read())["access_token"])
    conn.close()
    if len(set(tokens)) != count:
        raise SystemExit("the provider minted the same token twice")
    return tokens


def forge(token, i):
    # Same header and claims, a different (wrong) signature of the same length each time.
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[:4] = i.to_bytes(4, "big")
    raw[-1] ^= 0xFF
    return f"{head}.{body}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def token_run(proxy_addr, pid, path, tokens):
    """Sends one request per token over one connection; proxy CPU µs and latency per request."""
    conn = http.client.HTTPConnection(proxy_addr, timeout=10)
    statuses = {}
    latencies = []
    cpu = proxy_cpu_seconds(pid)
    for token in tokens:
        started = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1e6)
        statuses[response.status] = statuses.get(response.status, 0) + 1
    cpu = proxy_cpu_seconds(pid) - cpu
    conn.close()
    latencies.sort()
    return {
        "requests": len(tokens),
        "cpu_us_per_request": cpu * 1e6 / len(tokens),
        "p50_us": latencies[len(latencies) // 2],
        "p99_us": latencies[int(len(latencies) * 0.99)],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU {cpu}, Linux {platform.release()}"


def fmt_us(us):
    return "n/a" if us is None else (f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry-proxy", required=True)
    parser.add_argument("--dev-registry", required=True)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--registry-delay-ms",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[0, 1],
        help="comma-separated upstream delays to run with (0: the registry answers from memory)",
    )
    parser.add_argument("--token-requests", type=int, default=2000, help="requests per token row")
    parser.add_argument(
        "--suites",
        type=lambda v: set(v.split(",")),
        default={"wrk", "tokens"},
        help="comma-separated: wrk (the direct/proxied table), tokens (the token rows)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench/results"))
    args = parser.parse_args()

    module = Path(shutil.which("oauth2-mock-server") or os.environ["OAUTH2_MOCK_SERVER"]).resolve().parent / "index.mjs"
    work = Path(tempfile.mkdtemp(prefix="registry-proxy-bench-"))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = []
    results = []
    token_results = []
    audit_lines = 0
    loads = {"loaded": (args.threads, args.connections), "unloaded": (1, 1)}
    try:
        idp_port = free_port()
        issuer = f"http://127.0.0.1:{idp_port}"
        clients = json.dumps({CLIENT["id"]: {k: CLIENT[k] for k in ("secret", "sub", "groups")}})
        procs.append(
            subprocess.Popen(
                ["node", str(ROOT / "tests/oidc/provider.mjs"), str(idp_port), "registry-proxy", clients],
                env={**os.environ, "OAUTH2_MOCK_SERVER_MODULE": str(module)},
                **quiet,
            )
        )
        wait_http(f"{issuer}/.well-known/openid-configuration")
        basic = base64.b64encode(f"{CLIENT['id']}:{CLIENT['secret']}".encode()).decode()
        token = request(
            f"{issuer}/token",
            "POST",
            "grant_type=client_credentials&scope=schema_registry",
            {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )["access_token"]

        for delay in args.registry_delay_ms:
            reg_port, proxy_port, admin_port = (free_port() for _ in range(3))
            registry = f"http://127.0.0.1:{reg_port}"
            proxy = f"http://127.0.0.1:{proxy_port}"
            procs.append(
                subprocess.Popen(
                    [args.dev_registry, "--listen", f"127.0.0.1:{reg_port}", "--delay-ms", str(delay)], **quiet
                )
            )
            wait_http(f"{registry}/subjects")
            audit = work / f"audit-{delay}.log"
            proxy_proc = subprocess.Popen(
                    [
                        args.registry_proxy,
                        "--upstream", registry,
                        "--listen", f"127.0.0.1:{proxy_port}",
                        "--admin-listen", f"127.0.0.1:{admin_port}",
                        "--policies", str(ROOT / "policies"),
                        "--oidc-issuer", issuer,
                        "--oidc-audience", "registry-proxy",
                        "--audit", str(audit),
                    ],
                    # Lifts the verification rate limit (0: none) for the token rows; releases
                    # without the limit ignore the variable.
                    env={**os.environ, "RUST_LOG": "warn", "REGISTRY_PROXY_OIDC_VERIFY_RATE_PER_IP": "0"},
                    **quiet,
                )
            procs.append(proxy_proc)
            wait_http(f"http://127.0.0.1:{admin_port}/readyz", ok=lambda s: s == 200)

            body = json.dumps({"schema": SCHEMA})
            schema_id = request(
                f"{registry}/subjects/{SUBJECT}/versions", "POST", body, {"Content-Type": "application/json"}
            )["id"]
            targets = {
                "GET /schemas/ids/{id}": (f"/schemas/ids/{schema_id}", None),
                "POST /subjects/{s} (lookup)": (f"/subjects/{SUBJECT}", body),
            }
            if "tokens" in args.suites and delay == args.registry_delay_ms[0]:
                path = f"/schemas/ids/{schema_id}"
                addr = f"127.0.0.1:{proxy_port}"
                n = args.token_requests
                fresh = mint_tokens(issuer, 2 * n)
                token_run(addr, proxy_proc.pid, path, [token] * 200)  # warm-up: pools, caches
                rows = {
                    "same token (cache hit)": [token] * n,
                    "fresh token per request": fresh[:n],
                    "fresh forged token per request": [forge(t, i) for i, t in enumerate(fresh[n:])],
                    "one forged token replayed": [forge(fresh[0], 0)] * n,
                }
                for name, tokens in rows.items():
                    r = token_run(addr, proxy_proc.pid, path, tokens)
                    r.update({"row": name, "delay_ms": delay})
                    token_results.append(r)
                    print(
                        f"tokens {name:32} {r['cpu_us_per_request']:>8.0f} µs CPU/request  "
                        f"p50 {fmt_us(r['p50_us']):>9}  statuses {r['statuses']}",
                        flush=True,
                    )
            for load, (threads, connections) in loads.items():
                if "wrk" not in args.suites:
                    break
                for name, (path, lookup) in targets.items():
                    for route, base, tok in (("direct", registry, None), ("registry-proxy", proxy, token)):
                        # A short warm-up fills connection pools and the proxy's caches.
                        wrk(base + path, threads=threads, connections=connections, duration=2, token=tok, lookup=lookup)
                        r = wrk(
                            base + path, threads=threads, connections=connections, duration=args.duration,
                            token=tok, lookup=lookup,
                        )
                        r.update({"endpoint": name, "route": route, "load": load, "connections": connections, "delay_ms": delay})
                        results.append(r)
                        print(
                            f"delay {delay}ms {load:8} {name:28} {route:15} {r['rps']:>10.0f} rps  "
                            f"p50 {fmt_us(r['p50_us']):>9}  p99 {fmt_us(r['p99_us']):>9}",
                            flush=True,
                        )
            with open(audit) as f:
                audit_lines += sum(1 for _ in f)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": machine(),
        "duration_s": args.duration,
        "wrk": f"-t{args.threads} -c{args.connections} (loaded), -t1 -c1 (unloaded)",
        "audit_records_written": audit_lines,
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "registry-proxy.json").write_text(
        json.dumps({"meta": meta, "results": results, "tokens": token_results}, indent=2) + "\n"
    )

    def row(delay, load, name):
        def pick(route):
            return next(
                r for r in results
                if r["delay_ms"] == delay and r["load"] == load and r["endpoint"] == name and r["route"] == route
            )

        d, p = pick("direct"), pick("registry-proxy")
        upstream = "in memory" if delay == 0 else f"`--delay-ms {delay}`"
        return (
            f"| {upstream} | {name} | {load} (c={d['connections']}) | {d['rps']:.0f} | {p['rps']:.0f} | {p['rps'] / d['rps']:.2f}× "
            f"| {fmt_us(d['p50_us'])} | {fmt_us(p['p50_us'])} | {fmt_us(d['p99_us'])} | {fmt_us(p['p99_us'])} |"
        )

    lines = []
    if token_results:
        warm = token_results[0]["cpu_us_per_request"]
        lines += [
            "| token per request | proxy CPU per request | above a cache hit | p50 | p99 | answers |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {r['row']} | {r['cpu_us_per_request']:.0f} µs | {round(r['cpu_us_per_request'] - warm):+d} µs "
            f"| {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} | "
            + ", ".join(f"{n}× {s}" for s, n in r["statuses"].items())
            + " |"
            for r in token_results
        ]
        lines += [
            "",
            f"GET /schemas/ids/{{id}} (cached) over one keep-alive connection, {args.token_requests} "
            "requests per row, RS256 tokens from oauth2-mock-server; proxy CPU from "
            "/proc/PID/stat. Verification rate limit lifted for these rows.",
            "",
        ]
    if results:
        lines += [
            "| registry | endpoint | load | direct rps | proxied rps | ratio | direct p50 | proxied p50 | direct p99 | proxied p99 |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        names = ["GET /schemas/ids/{id}", "POST /subjects/{s} (lookup)"]
        lines += [row(delay, load, name) for delay in args.registry_delay_ms for load in loads for name in names]
    lines.append("")
    if results:
        lines.append(
            f"Machine: {meta['machine']}. wrk {meta['wrk']}, {args.duration} s per run after a 2 s warm-up, "
            f"{meta['date']}. Upstream: the development registry, answering from memory, and with "
            f"`--delay-ms` standing in for a registry one network hop away (tokio's millisecond timer "
            f"makes `--delay-ms 1` about 2 ms: see the direct p50). The proxy validated an RS256 "
            f"token from oauth2-mock-server, evaluated policies/registry.yaml and wrote "
            f"{audit_lines} audit records during the run. Command: `bench/run-registry-proxy`."
        )
    else:
        lines.append(f"Machine: {meta['machine']}, {meta['date']}. Command: `bench/run-registry-proxy --suites tokens`.")
    (out / "registry-proxy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
