#!/usr/bin/env python3
"""Connection floods against a real ecrld, on loopback, bounded in count and time.

Starts a release ecrld on a temporary data dir (`--registry-addr 127.0.0.1:0`), pushes a
small image for "the owner", then runs a flood while the owner pulls its manifest, and
reports the owner's latencies and ecrld's RSS and open descriptors during and after the
flood. Python 3 standard library only.

Each flood kind is a function `flood_<kind>(address, count, stop, stats)` run in its own
client processes; add a kind by writing one and naming it in FLOODS. Kinds:
- half_open: connections that send half a request head, then nothing, reopened when closed;
- sessions: a user allowed to push to one repository opens upload sessions (a POST and one
  70,000-byte PATCH each) as fast as it can; the registry then wants credentials, and the
  owner also pushes a big blob (--owner-push-mib) during the flood.

    bench/flood.py [--ecrld target/release/ecrld] [--kind half_open] [--conns 20000]
                   [--clients 2] [--seconds 20] [--reconnect-per-s 1000]
                   [--config FILE] [--json OUT]
"""
import argparse
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
RSS_UNDER_MIB = 64
MAX_CONNS = 50_000
MAX_SECONDS = 300


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the daemon ------------------------------------------------------------------------------

class Daemon:
    def __init__(self, ecrld, ecrl, config=None, env_extra=None):
        self.dir = tempfile.mkdtemp(prefix="ecrl-flood-")
        os.makedirs(os.path.join(self.dir, "home"))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.path.join(self.dir, "home"),
            "ECRL_DATA_DIR": os.path.join(self.dir, "data"),
            "ECRL_SOCKET": os.path.join(self.dir, "ecrl.sock"),
            "ECRL_ANONYMOUS": "all",
            "ECRL_ENCRYPTION": "none",
            "ECRL_LOG": "info",
        }
        self.env.update(env_extra or {})
        args = [ecrld, "--registry-addr", "127.0.0.1:0"]
        if config:
            args += ["--config", os.path.abspath(config)]
        self.log_path = os.path.join(self.dir, "ecrld.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        self.ecrl = ecrl
        self.address = self._wait_address()

    def _wait_address(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"ecrld exited: {open(self.log_path).read()}")
            out = subprocess.run([self.ecrl, "daemon", "status", "--output", "json"],
                                 env=self.env, capture_output=True, text=True)
            if out.returncode == 0:
                return json.loads(out.stdout)["registryAddress"]
            time.sleep(0.1)
        sys.exit("ecrld did not answer in 20 s")

    def rss_mib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


    def ecrl_json(self, *args):
        out = subprocess.run([self.ecrl, *args, "--output", "json"], env=self.env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def ecrl_text(self, *args):
        return subprocess.run([self.ecrl, *args], env=self.env, capture_output=True,
                              text=True, check=True).stdout


# --- the owner -------------------------------------------------------------------------------

# The owner's Authorization, when the registry wants credentials (the sessions flood).
OWNER_HEADERS = {}


def basic(user, password):
    import base64
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(address, method, path, body=None, headers=None, timeout=10):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={**OWNER_HEADERS, **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


def push_owner_image(address, repo="owner/app"):
    """A config blob and a one-layer manifest; returns the manifest's path."""
    blobs = []
    for content in (b'{"architecture":"amd64","os":"linux"}', os.urandom(4096)):
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        status, body = request(address, "POST",
                               f"/v2/{repo}/blobs/uploads/?digest={digest}", body=content,
                               headers={"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        blobs.append((digest, len(content)))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blobs[0][0], "size": blobs[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": blobs[1][0], "size": blobs[1][1]}],
    }).encode()
    status, body = request(address, "PUT", f"/v2/{repo}/manifests/1", body=manifest,
                           headers={"Content-Type": MANIFEST_TYPE})
    assert status == 201, (status, body)
    return f"/v2/{repo}/manifests/1"


def owner_gets(address, path, seconds, per_s):
    """Manifest GETs on a new connection each (the hard case: each must be accepted)."""
    latencies, failures = [], []
    end = time.time() + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        try:
            status, _ = request(address, "GET", path, headers={"Accept": MANIFEST_TYPE})
            if status != 200:
                failures.append(f"status {status}")
        except OSError as e:
            failures.append(repr(e))
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(max(0.0, 1 / per_s - (time.perf_counter() - t0)))
    return latencies, failures


# --- the floods ------------------------------------------------------------------------------

def _connect_nonblocking(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    return s


def flood_half_open(address, count, stop, stats, reconnect_per_s):
    """Connections that send part of a request line and headers, then nothing; each one the
    registry closes is opened again (at most `reconnect_per_s` a second)."""
    raise_nofile()
    host, port = address.rsplit(":", 1)
    port = int(port)
    partial = b"GET /v2/owner/app/manifests/1 HTTP/1.1\r\nHost: x\r\nX-Slow: "
    sel = selectors.DefaultSelector()
    open_, opened, closed = 0, 0, 0

    def open_one():
        nonlocal open_, opened
        try:
            s = _connect_nonblocking(host, port)
        except OSError:
            return False
        sel.register(s, selectors.EVENT_WRITE, "connecting")
        open_ += 1
        opened += 1
        return True

    for _ in range(count):
        if stop.is_set() or not open_one():
            break
    budget, budget_at = 0.0, time.time()
    while not stop.is_set():
        for key, events in sel.select(timeout=0.1):
            s = key.fileobj
            if key.data == "connecting":
                try:
                    s.send(partial)
                    sel.modify(s, selectors.EVENT_READ, "held")
                    continue
                except OSError:
                    pass
            else:
                try:
                    if s.recv(4096):
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
            sel.unregister(s)
            s.close()
            open_ -= 1
            closed += 1
        now = time.time()
        budget = min(reconnect_per_s, budget + (now - budget_at) * reconnect_per_s)
        budget_at = now
        while open_ < count and budget >= 1 and not stop.is_set():
            budget -= 1
            if not open_one():
                break
        stats.update({"open": open_, "opened": opened, "closed_by_server": closed})
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    stats.update({"open": 0, "opened": opened, "closed_by_server": closed})


def flood_sessions(address, count, stop, stats, _reconnect_per_s):
    """A pushing user opens up to `count` upload sessions, each with one 70,000-byte PATCH
    (past the size kept in memory), over one keep-alive connection, and never ends them."""
    host, port = address.rsplit(":", 1)
    auth = {"Authorization": FLOOD_AUTH.value.decode()}
    chunk = os.urandom(70_000)
    statuses = {}
    conn = None
    attempts = 0
    while attempts < count and not stop.is_set():
        attempts += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("POST", "/v2/flood/app/blobs/uploads/", headers=auth)
            resp = conn.getresponse()
            resp.read()
            key = str(resp.status)
            if resp.status == 202:
                conn.request("PATCH", resp.getheader("Location"), body=chunk,
                             headers={**auth, "Content-Type": "application/octet-stream"})
                patched = conn.getresponse()
                patched.read()
                key = f"202, PATCH {patched.status}"
            elif resp.status == 429:
                # What a client that honours Retry-After would not do: the flood goes on.
                pass
            statuses[key] = statuses.get(key, 0) + 1
        except OSError as e:
            statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
            if conn is not None:
                conn.close()
            conn = None
        if attempts % 100 == 0:
            stats.update({"attempts": attempts, "statuses": dict(statuses)})
    stats.update({"attempts": attempts, "statuses": dict(statuses), "open": 0})
    if conn is not None:
        conn.close()


def owner_push(address, mib):
    """The owner pushes one blob of `mib` MiB in one request; returns (ok, MB/s)."""
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    for _ in range(mib):
        digest.update(block)
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    t0 = time.perf_counter()
    try:
        conn.request("POST", f"/v2/owner/big/blobs/uploads/?digest=sha256:{digest.hexdigest()}",
                     body=(block for _ in range(mib)),
                     headers={**OWNER_HEADERS, "Content-Length": str(mib << 20),
                              "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
        ok = resp.status == 201
    except OSError:
        ok = False
    finally:
        conn.close()
    return ok, round((mib << 20) / 1e6 / (time.perf_counter() - t0))


# The flood user's Authorization, shared with the flood processes.
FLOOD_AUTH = mp.Array("c", 512)

FLOODS = {"half_open": flood_half_open, "sessions": flood_sessions}


# --- the run ---------------------------------------------------------------------------------

def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run(args):
    if args.conns > MAX_CONNS or args.seconds > MAX_SECONDS:
        sys.exit(f"bounded: at most {MAX_CONNS} connections and {MAX_SECONDS} s")
    have = raise_nofile()
    per_client = args.conns // args.clients
    if per_client + 64 > have:
        sys.exit(f"{per_client} connections a client need more than the {have} open files allowed")
    sessions = args.kind == "sessions"
    daemon = Daemon(args.ecrld, args.ecrl, args.config,
                    {"ECRL_ANONYMOUS": "none"} if sessions else None)
    result = {"kind": args.kind, "conns": args.conns, "clients": args.clients,
              "seconds": args.seconds, "reconnect_per_s": args.reconnect_per_s}
    try:
        address = daemon.address
        if sessions:
            OWNER_HEADERS["Authorization"] = basic("AWS", daemon.ecrl_text(
                "get-login-password").strip())
            user = daemon.ecrl_json("auth", "user", "create", "flood")
            policy = os.path.join(daemon.dir, "push-flood.json")
            with open(policy, "w") as f:
                json.dump({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": "ecr:*",
                    "Resource": "arn:aws:ecr:*:*:repository/flood/*"}]}, f)
            daemon.ecrl_text("auth", "policy", "attach", "flood", policy, "--quiet")
            FLOOD_AUTH.value = basic(user["AccessKey"]["AccessKeyId"],
                                     user["AccessKey"]["SecretAccessKey"]).encode()
        path = push_owner_image(address)
        limits = [l for l in open(daemon.log_path).read().splitlines()
                  if "registry connection limits" in l]
        result["limits_log"] = limits[-1] if limits else None
        result["rss_idle_MiB"] = round(daemon.rss_mib(), 1)
        base_lat, base_fail = owner_gets(address, path, 2, 50)
        result["owner_before"] = {"n": len(base_lat), "failures": len(base_fail),
                                  "p50_ms": percentile(base_lat, 50),
                                  "p99_ms": percentile(base_lat, 99)}

        manager = mp.Manager()
        stop = mp.Event()
        stats = [manager.dict() for _ in range(args.clients)]
        flood = FLOODS[args.kind]
        procs = [mp.Process(target=flood, args=(address, per_client, stop, stats[i],
                                                args.reconnect_per_s))
                 for i in range(args.clients)]
        cpu0 = daemon.cpu_s()
        for p in procs:
            p.start()
        # Let the flood build up before the owner measures.
        samples = []
        t_start = time.time()
        while time.time() - t_start < 3:
            samples.append((time.time() - t_start, daemon.rss_mib(), daemon.fds()))
            time.sleep(0.2)
        import threading
        owner = {}

        def owner_thread():
            owner["lat"], owner["fail"] = owner_gets(address, path, args.seconds, 50)
        def push_thread():
            owner["push_ok"], owner["push_MBps"] = owner_push(address, args.owner_push_mib)
        threads = [threading.Thread(target=owner_thread)]
        if args.owner_push_mib:
            threads.append(threading.Thread(target=push_thread))
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            samples.append((time.time() - t_start, daemon.rss_mib(), daemon.fds()))
            time.sleep(0.2)
        for t in threads:
            t.join()
        held = sum(s.get("open", 0) for s in stats)
        opened = sum(s.get("opened", 0) for s in stats)
        closed = sum(s.get("closed_by_server", 0) for s in stats)
        stop.set()
        for p in procs:
            p.join(timeout=30)
        t_end = time.time()
        cpu1 = daemon.cpu_s()
        after = []
        back_under = None
        while time.time() - t_end < args.after:
            rss = daemon.rss_mib()
            after.append((round(time.time() - t_end, 1), round(rss, 1), daemon.fds()))
            if back_under is None and rss < RSS_UNDER_MIB:
                back_under = time.time() - t_end
            time.sleep(0.2)
        lat, fail = owner["lat"], owner["fail"]
        if sessions:
            merged = {}
            for s in stats:
                for k, v in s.get("statuses", {}).items():
                    merged[k] = merged.get(k, 0) + v
            result["flood_session_answers"] = merged
        if args.owner_push_mib:
            result["owner_push"] = {"MiB": args.owner_push_mib, "ok": owner.get("push_ok"),
                                    "MBps": owner.get("push_MBps")}
        result.update({
            "flood_client_sockets_held_at_end": held,
            "flood_connects": opened,
            "flood_closed_by_server": closed,
            "owner_during": {"n": len(lat), "failures": len(fail), "first_failures": fail[:5],
                             "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                             "max_ms": max(lat) if lat else None},
            "rss_peak_during_MiB": round(max(s[1] for s in samples), 1),
            "fds_peak_during": max(s[2] for s in samples),
            "rss_10s_after_MiB": next((a[1] for a in after if a[0] >= 10), after[-1][1]),
            "rss_back_under_64MiB_after_s": None if back_under is None else round(back_under, 1),
            "fds_after": after[-1][2],
            "after_series_s_rss_fds": after[::5],
            "ecrld_cpu_during_s": round(cpu1 - cpu0, 1),
            "ecrld_alive": daemon.proc.poll() is None,
        })
        owner_after, fail_after = owner_gets(address, path, 1, 50)
        result["owner_after"] = {"n": len(owner_after), "failures": len(fail_after),
                                 "p99_ms": percentile(owner_after, 99)}
    finally:
        daemon.stop()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ecrld", default=os.path.join(REPO, "target/release/ecrld"))
    p.add_argument("--ecrl", default=os.path.join(REPO, "target/release/ecrl"))
    p.add_argument("--kind", default="half_open", choices=sorted(FLOODS))
    p.add_argument("--conns", type=int, default=20_000)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--after", type=float, default=12, help="seconds watched after the flood")
    p.add_argument("--reconnect-per-s", type=float, default=1000,
                   help="per client: how fast connections the registry closed are reopened")
    p.add_argument("--owner-push-mib", type=int, default=None,
                   help="the owner pushes a blob this big during the flood "
                        "(default 1024 for sessions, none for half_open)")
    p.add_argument("--config", help="an ecrld config file (limits, timeouts)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    if args.owner_push_mib is None:
        args.owner_push_mib = 1024 if args.kind == "sessions" else 0
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    during = result["owner_during"]
    ok = (during["failures"] == 0 and during["p99_ms"] is not None and during["p99_ms"] <= 100
          and result["rss_peak_during_MiB"] <= 200
          and result["rss_back_under_64MiB_after_s"] is not None
          and result["rss_back_under_64MiB_after_s"] <= 10
          and result.get("owner_push", {}).get("ok", True))
    print("targets (owner p99 <= 100 ms, no failures, RSS <= 200 MiB, < 64 MiB within 10 s):",
          "met" if ok else "NOT met", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
