#!/usr/bin/env python3
"""A big image for the benchmarks: an OCI layout of 4 uncompressed tar layers, each one file of
MIB MiB of random bytes (random data does not compress, so no gzip). Writes, beside the layout:
`digest` (the manifest's), `layers` (the layer digests) and `blobs` ("digest size" lines, the
config first).

Usage: bench/big_image.py LAYOUT_DIR MIB [CREATED_BY]"""
import hashlib, json, os, sys, tarfile
out, mib = sys.argv[1], int(sys.argv[2])
created_by = sys.argv[3] if len(sys.argv) > 3 else "bench/big_image.py"
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)

class Hashing:
    """A file that hashes what is written to it."""
    def __init__(self, path):
        self.f, self.h, self.n = open(path, "wb"), hashlib.sha256(), 0
    def write(self, b):
        self.f.write(b); self.h.update(b); self.n += len(b)
        return len(b)
    def tell(self):
        return self.n

class Random:
    def __init__(self, size):
        self.left = size
    def read(self, k=-1):
        k = self.left if k < 0 else min(k, self.left)
        self.left -= k
        return os.urandom(k)

def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)

layers = []
for i in range(1, 5):
    tmp = os.path.join(out, "layer.tmp")
    w = Hashing(tmp)
    with tarfile.open(fileobj=w, mode="w", format=tarfile.PAX_FORMAT, copybufsize=4 << 20) as t:
        info = tarfile.TarInfo(f"layer{i}.bin")
        info.size, info.mode, info.mtime = mib << 20, 0o644, 0
        t.addfile(info, Random(info.size))
    w.f.close()
    d = w.h.hexdigest()
    os.rename(tmp, os.path.join(blobs, d))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                   "digest": "sha256:" + d, "size": w.n})
config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
          "config": {"Cmd": ["/layer1.bin"]},
          "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
          "history": [{"created": "2024-01-01T00:00:00Z", "created_by": created_by}
                      for _ in layers]}
cd, cs = blob(json.dumps(config, separators=(",", ":")).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": cs},
            "layers": layers}
md, ms = blob(json.dumps(manifest, separators=(",", ":")).encode())
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": manifest["mediaType"], "digest": md, "size": ms,
                        "platform": {"architecture": "amd64", "os": "linux"},
                        "annotations": {"org.opencontainers.image.ref.name": "1"}}]}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "..", "layers"), "w") as f:
    f.write("\n".join(l["digest"] for l in layers) + "\n")
with open(os.path.join(out, "..", "blobs"), "w") as f:
    f.write("".join(f"{b['digest']} {b['size']}\n" for b in [manifest["config"]] + layers))
with open(os.path.join(out, "..", "digest"), "w") as f:
    f.write(md + "\n")
