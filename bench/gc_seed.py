#!/usr/bin/env python3
"""Seeds a registry for bench/gc.sh: REPOS repositories of IMAGES images, each image BLOBS
distinct small blobs (a config and BLOBS-1 layers of SIZE bytes), pushed over the registry
API by THREADS threads with keep-alive connections; then one repository `big/preview` of
PREVIEW images (each its own 64-byte layer), for the lifecycle preview. Prints what it pushed
as JSON.

Usage: bench/gc_seed.py URL REPOS IMAGES BLOBS SIZE THREADS PREVIEW"""
import hashlib, http.client, json, os, sys, threading, time, urllib.parse

url, repos, images, blobs, size, threads, preview = sys.argv[1], *map(int, sys.argv[2:8])
host = urllib.parse.urlparse(url).netloc
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Client:
    def __init__(self):
        self.c = http.client.HTTPConnection(host, timeout=60)

    def request(self, method, path, body=None, headers=None):
        for attempt in range(3):
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = http.client.HTTPConnection(host, timeout=60)
                if attempt == 2:
                    raise

    def blob(self, repo, data):
        d = digest(data)
        s, body = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data,
                               {"Content-Type": "application/octet-stream"})
        if s != 201:
            raise SystemExit(f"blob push to {repo}: {s} {body[:200]!r}")
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                "size": len(data)}

    def manifest(self, repo, tag, config, layers):
        m = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                        "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                        "layers": layers}).encode()
        s, body = self.request("PUT", f"/v2/{repo}/manifests/{tag}", m,
                               {"Content-Type": MANIFEST})
        if s != 201:
            raise SystemExit(f"manifest {repo}:{tag}: {s} {body[:200]!r}")


def work(jobs, lock, done):
    c = Client()
    while True:
        with lock:
            if not jobs:
                return
            job = jobs.pop()
        kind, repo, i = job
        if kind == "image":
            seed = f"{repo}/{i}".encode()
            config = c.blob(repo, json.dumps({"image": f"{repo}:{i}", "os": "linux",
                                              "architecture": "amd64"}).encode())
            layers = [c.blob(repo, hashlib.sha256(seed + bytes([k])).digest() * (size // 32))
                      for k in range(blobs - 1)]
            c.manifest(repo, f"i{i}", config, layers)
        else:
            config = c.blob(repo, b'{"os":"linux","architecture":"amd64"}')
            layer = c.blob(repo, f"preview layer {i}".encode().ljust(64, b"."))
            c.manifest(repo, f"p{i}", config, [layer])
        with lock:
            done[0] += 1


def run(jobs):
    lock, done = threading.Lock(), [0]
    ts = [threading.Thread(target=work, args=(jobs, lock, done)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return done[0]


t0 = time.time()
n = run([("image", f"gc/r{r}", i) for r in range(repos) for i in range(images)])
t1 = time.time()
p = run([("preview", "big/preview", i) for i in range(preview)])
t2 = time.time()
print(json.dumps({"images": n, "blobs": n * blobs, "seed_s": round(t1 - t0, 1),
                  "preview_images": p, "preview_seed_s": round(t2 - t1, 1)}))
