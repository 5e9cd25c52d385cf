#!/usr/bin/env python3
"""Load test of `minirec serve` on loopback (issue 16), bounded in requests and time; Python stdlib only.

    python3 benches/serve/load_test.py --bin target/release/minirec --model MODEL --data DATA_DIR \
        --out RESULTS_DIR [--clients 1,4,8] [--requests 4] [--beam 20] [--k 10] [--max-batch 8] ...

Phases, one server for all of them:
  1. one request at a time over `--references` distinct test histories: the one-request latency, and each
     history's answer kept as its reference;
  2. for each client count C: C clients on keep-alive connections, each sending `--requests` requests that
     cycle through the reference histories. Requests/s, p50 / p99 latency, errors, the batch sizes the server
     chose (its /metrics before and after), and every answer's titles against the one-request answer;
  3. the largest C again with misbehaving clients beside it: a body sent a byte at a time (408 expected),
     garbage bytes (400), a body over --max-body-bytes (413), malformed JSON (400), a title over
     --max-title-chars (422), k > beam (422), a history of thousands of titles (answered from the most recent
     ones), a client that disconnects before its answer, idle connections that never send. The well-behaved
     clients must see zero errors and unchanged answers;
  4. SIGTERM with requests in flight: they are answered and the server exits 0.
The server's RSS is sampled every 0.2 s throughout; memory growth is the RSS after the last load phase minus
after the first one at the same load. Writes RESULTS_DIR/load_test.json and prints a markdown table.
"""

import argparse
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--label", default="")
    p.add_argument("--clients", default="1,4,8")
    p.add_argument("--requests", type=int, default=4, help="requests per client in each load phase")
    p.add_argument("--repeats", type=int, default=3,
                   help="times the largest client count runs (RSS after each: memory growth)")
    p.add_argument("--references", type=int, default=8, help="distinct histories answered one at a time")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=int, default=50)
    p.add_argument("--read-timeout-ms", type=int, default=3000)
    p.add_argument("--time-limit", type=float, default=1800, help="seconds for the whole test")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--server-args", default="", help="more arguments for minirec serve")
    return p.parse_args()


class Server:
    def __init__(self, a):
        cmd = [a.bin, "serve", "--model", a.model, "--data", a.data, "--addr", "127.0.0.1:0",
               "--max-batch", str(a.max_batch), "--max-wait-ms", str(a.max_wait_ms),
               "--read-timeout-ms", str(a.read_timeout_ms), "--max-body-bytes", str(1 << 20),
               "--max-title-chars", "1000", "--quiet"] + a.server_args.split()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on (\S+):(\d+)", line)
        if not m:
            sys.exit(f"the server did not start: {line!r} (exit {self.proc.poll()})")
        self.host, self.port = m.group(1), int(m.group(2))
        self.rss = []  # (seconds since start, MB)
        self.t0 = time.time()
        self.sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while self.sampling and self.proc.poll() is None:
            self.rss.append((time.time() - self.t0, self.rss_mb()))
            time.sleep(0.2)

    def rss_mb(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def connection(self, timeout=600):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def metrics(self):
        c = self.connection()
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        batches = {int(s): int(n) for s, n in re.findall(r'minirec_batches_total\{size="(\d+)"\} (\d+)', text)}
        return batches, text


def post(conn, path, body):
    """One request on a kept-alive connection: (status, parsed body or text, seconds)."""
    t = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read()
    took = time.perf_counter() - t
    try:
        return r.status, json.loads(raw), took
    except ValueError:
        return r.status, raw.decode(errors="replace"), took


def load_histories(data, n, seed):
    """n distinct test histories (item ids), seeded."""
    rows = [json.loads(line) for line in open(os.path.join(data, "test.jsonl"))]
    seen, out = set(), []
    random.Random(seed).shuffle(rows)
    for r in rows:
        key = tuple(r["history"])
        if key not in seen:
            seen.add(key)
            out.append(r["history"])
        if len(out) == n:
            break
    return out


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[i]


def summary(latencies, wall):
    return {
        "requests": len(latencies),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 4) if wall > 0 else None,
        "p50_s": round(percentile(latencies, 50), 4),
        "p99_s": round(percentile(latencies, 99), 4),
        "mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
    }


def ask_body(history, a):
    return json.dumps({"history_ids": history, "k": a.k, "beam": a.beam})


def titles(answer):
    return [x["title"] for x in answer["items"]]


def one_at_a_time(srv, hist, a):
    conn = srv.connection()
    refs, lat = [], []
    for h in hist:
        code, ans, took = post(conn, "/v1/recommend", ask_body(h, a))
        if code != 200:
            sys.exit(f"reference request failed: {code} {ans}")
        refs.append(ans)
        lat.append(took)
    conn.close()
    return refs, lat


def load_phase(srv, hist, refs, clients, a, deadline):
    """C clients on keep-alive connections; returns the phase's numbers."""
    lat, errors, mismatches, score_diff = [], [], 0, 0.0
    lock = threading.Lock()
    before, _ = srv.metrics()

    def client(c):
        nonlocal mismatches, score_diff
        conn = srv.connection()
        for j in range(a.requests):
            if time.time() > deadline:
                break
            i = (c * a.requests + j) % len(hist)
            try:
                code, ans, took = post(conn, "/v1/recommend", ask_body(hist[i], a))
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"client {c}: {e!r}")
                conn = srv.connection()
                continue
            with lock:
                if code != 200:
                    errors.append(f"client {c}: {code} {ans}")
                    continue
                lat.append(took)
                if titles(ans) != titles(refs[i]):
                    mismatches += 1
                for x, y in zip(ans["items"], refs[i]["items"]):
                    score_diff = max(score_diff, abs(x["score"] - y["score"]))
        conn.close()

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    after, _ = srv.metrics()
    chosen = {s: after.get(s, 0) - before.get(s, 0) for s in after if after.get(s, 0) > before.get(s, 0)}
    row = summary(lat, wall)
    n_batches = sum(chosen.values())
    row.update({
        "clients": clients,
        "errors": errors,
        "answers_differing_from_one_request": mismatches,
        "max_score_difference": score_diff,
        "batches": dict(sorted(chosen.items())),
        "mean_batch": round(sum(s * n for s, n in chosen.items()) / n_batches, 2) if n_batches else None,
        "rss_after_mb": round(srv.rss_mb(), 1),
    })
    return row


def status_line(s):
    data = b""
    while b"\r\n" not in data:
        got = s.recv(4096)
        if not got:
            break
        data += got
    return data.split(b"\r\n", 1)[0].decode(errors="replace") or "connection closed"


def raw_exchange(srv, payload, read=True, timeout=120):
    """Sends bytes on a fresh socket and returns the status line of the answer. A server may answer (413) and
    close before the whole payload is sent: the answer is still read."""
    s = socket.create_connection((srv.host, srv.port), timeout=timeout)
    try:
        try:
            s.sendall(payload)
        except OSError:
            pass
        return status_line(s) if read else "closed before the answer"
    except OSError as e:
        return f"socket error: {e!r}"
    finally:
        s.close()


def slow_body(srv, body, pause):
    """Headers at once, then the body a byte every `pause` s until the server answers."""
    s = socket.create_connection((srv.host, srv.port), timeout=120)
    try:
        s.sendall(request_bytes(body)[: -len(body)])
        for b in body.encode():
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            if select.select([s], [], [], pause)[0]:
                break
        return status_line(s)
    except OSError as e:
        return f"socket error: {e!r}"
    finally:
        s.close()


def request_bytes(body, length=None):
    body = body.encode() if isinstance(body, str) else body
    n = len(body) if length is None else length
    head = f"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def misbehaving(srv, hist, catalog_titles, a):
    """Each misbehaving client with what it got and what it should get."""
    many = [catalog_titles[i % len(catalog_titles)] for i in range(3000)]
    long_history = json.dumps({"history": many, "k": a.k, "beam": a.beam})
    cases = {
        "body a byte every 0.5 s (408)": (lambda: slow_body(srv, '{"history_ids": ["1"]}' + " " * 40, 0.5), "408"),
        "garbage bytes (400)": (lambda: raw_exchange(srv, b"\x00\x01\xffGARBAGE\r\n\r\n"), "400"),
        "2 MB body (413)": (lambda: raw_exchange(srv, request_bytes(b'{"history": ["' + b"x" * (2 << 20) + b'"]}')),
                            "413"),
        "malformed JSON (400)": (lambda: raw_exchange(srv, request_bytes('{"history": [')), "400"),
        "title of 5,000 chars (422)": (lambda: raw_exchange(srv, request_bytes(
            json.dumps({"history": ["z" * 5000], "allow_unknown": True}))), "422"),
        "k > beam (422)": (lambda: raw_exchange(srv, request_bytes(
            json.dumps({"history_ids": hist[0], "k": 50, "beam": 5}))), "422"),
        "history of 3,000 titles (200)": (
            lambda: raw_exchange(srv, request_bytes(long_history)), "200"),
        "disconnects before its answer": (lambda: raw_exchange(srv, request_bytes(ask_body(hist[1], a)), read=False),
                                          "closed before the answer"),
    }
    results, lock = {}, threading.Lock()

    def run(name, f, want):
        got = f()
        with lock:
            results[name] = {"got": got, "expected": want, "ok": want in got}

    idle = [socket.create_connection((srv.host, srv.port)) for _ in range(64)]
    threads = [threading.Thread(target=run, args=(n, f, w)) for n, (f, w) in cases.items()]
    for th in threads:
        th.start()
    return threads, results, idle


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    deadline = time.time() + a.time_limit
    clients = [int(c) for c in a.clients.split(",")]
    hist = load_histories(a.data, a.references, a.seed)
    catalog_titles = [json.loads(line)["title"] for line in open(os.path.join(a.data, "catalog.jsonl"))]
    srv = Server(a)
    out = {"label": a.label, "model": a.model, "data": a.data, "beam": a.beam, "k": a.k,
           "max_batch": a.max_batch, "max_wait_ms": a.max_wait_ms, "cpu": cpu_name(), "cores": os.cpu_count()}
    try:
        post(srv.connection(), "/v1/recommend", ask_body(hist[0], a))  # warm-up
        out["rss_after_warmup_mb"] = round(srv.rss_mb(), 1)
        refs, lat = one_at_a_time(srv, hist, a)
        out["one_request"] = summary(lat, sum(lat))
        out["load"] = [load_phase(srv, hist, refs, c, a, deadline) for c in clients]
        out["repeats"] = [load_phase(srv, hist, refs, clients[-1], a, deadline) for _ in range(a.repeats - 1)]
        soak = [out["load"][-1]] + out["repeats"]
        out["memory_growth_mb"] = round(soak[-1]["rss_after_mb"] - soak[0]["rss_after_mb"], 1)
        out["rss_after_each_repeat_mb"] = [r["rss_after_mb"] for r in soak]
        threads, bad, idle = misbehaving(srv, hist, catalog_titles, a)
        beside = load_phase(srv, hist, refs, clients[-1], a, deadline)
        for th in threads:
            th.join(timeout=max(1, deadline - time.time()))
        out["beside_misbehaving"] = beside
        out["misbehaving"] = bad
        out["idle_connections_held"] = len(idle)
        for s in idle:
            s.close()
        code, health, _ = post_get(srv, "/healthz")
        out["healthy_after"] = code == 200
        out["sigterm"] = sigterm_drain(srv, hist, refs, a)
    finally:
        srv.sampling = False
        if srv.proc.poll() is None:
            srv.proc.kill()
    out["rss_peak_mb"] = round(max(m for _, m in srv.rss if m == m), 1)
    out["rss_samples"] = [(round(t, 1), round(m, 1)) for t, m in srv.rss[::5]]
    with open(os.path.join(a.out, "load_test.json"), "w") as f:
        json.dump(out, f, indent=1)
    print_table(out)
    phases = out["load"] + out["repeats"] + [beside]
    ok = (all(not r["errors"] and r["answers_differing_from_one_request"] == 0 for r in phases)
          and all(v["ok"] for v in bad.values()) and out["healthy_after"] and out["sigterm"]["ok"])
    sys.exit(0 if ok else 1)


def post_get(srv, path):
    c = srv.connection()
    t = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read(), time.perf_counter() - t


def sigterm_drain(srv, hist, refs, a):
    """Two requests in flight when SIGTERM arrives: both answered, then a clean exit."""
    got = []

    def one(i):
        code, ans, _ = post(srv.connection(), "/v1/recommend", ask_body(hist[i], a))
        got.append(code == 200 and titles(ans) == titles(refs[i]))

    ths = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
    for th in ths:
        th.start()
    time.sleep(0.02 + a.max_wait_ms / 1000 / 2)
    srv.proc.send_signal(signal.SIGTERM)
    for th in ths:
        th.join(timeout=600)
    code = srv.proc.wait(timeout=600)
    return {"answered": sum(got), "in_flight": 2, "exit_code": code, "ok": code == 0 and got == [True, True]}


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def print_table(o):
    print(f"\n{o['label']}: beam {o['beam']}, k {o['k']}, --max-batch {o['max_batch']}, "
          f"--max-wait-ms {o['max_wait_ms']}, {o['cpu']} × {o['cores']}")
    one = o["one_request"]
    print(f"one request at a time: {one['requests']} requests, p50 {one['p50_s']} s, "
          f"{one['requests_per_s']} requests/s")
    print("| clients | requests | requests/s | × one at a time | p50 s | p99 s | mean batch | errors | "
          "answers ≠ alone | RSS after MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    repeats = [dict(r, clients=f"{r['clients']} (again)") for r in o["repeats"]]
    for r in o["load"] + repeats + [dict(o["beside_misbehaving"], clients=f"{o['beside_misbehaving']['clients']} + bad")]:
        speed = r["requests_per_s"] / one["requests_per_s"] if r["requests_per_s"] else float("nan")
        print(f"| {r['clients']} | {r['requests']} | {r['requests_per_s']} | {speed:.2f} | {r['p50_s']} | "
              f"{r['p99_s']} | {r['mean_batch']} | {len(r['errors'])} | "
              f"{r['answers_differing_from_one_request']} | {r['rss_after_mb']} |")
    for name, v in o["misbehaving"].items():
        print(f"- {name}: {v['got']} {'ok' if v['ok'] else 'UNEXPECTED'}")
    print(f"- {o['idle_connections_held']} idle connections held open meanwhile; healthy after: {o['healthy_after']}")
    print(f"RSS after warm-up {o['rss_after_warmup_mb']} MB, peak {o['rss_peak_mb']} MB; after each run of the "
          f"largest load {o['rss_after_each_repeat_mb']} MB (growth {o['memory_growth_mb']} MB); "
          f"SIGTERM: {o['sigterm']}")


if __name__ == "__main__":
    main()
