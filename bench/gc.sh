#!/usr/bin/env bash
# Garbage collection, lifecycle preview and fsck at scale (issue 20), on one fresh ecrld
# (release build, encrypted at rest, anonymous, plain HTTP on loopback):
#  1. seed: REPOS repositories × IMAGES images × BLOBS distinct blobs of 4 KiB (default
#     100 × 100 × 10 = 100,000 blobs in 10,000 images), 1,000 uploads no manifest references
#     (garbage for the collection), and one repository of 10,000 one-layer images;
#  2. gc alone: `ecrl gc` timed (target ≤ 10 s);
#  3. a 4 KiB push load (regload push-small, 16 clients) idle, then again while collections
#     run back to back (target: ≥ 80 % of the idle rate);
#  4. lifecycle preview of the 10,000-image repository (`ecrl repo lifecycle preview`, the
#     CLI's whole run, target ≤ 1 s);
#  5. fsck against a hot pull: a 1 GiB image (4 × 256 MiB random layers) pushed, pulled
#     twice, then a timed pull (curl, 5 blobs in parallel) and a timed `ecrl fsck`, each
#     reading the same GiB (target: fsck ≥ 0.8 × the pull's bytes per second).
# Usage: bench/gc.sh          (needs python3, curl, jq, bc, skopeo, regload as bench/registry.sh
#                              builds it; ECRL_BENCH_BUILD=0 measures target/release as is)
#   REPOS, IMAGES, BLOBS, PREVIEW override the store's shape.
# Results: a markdown table on stdout, raw figures in /tmp/ecrl-bench/gc.json.
set -euo pipefail
cd "$(dirname "$0")/.."
repos=${REPOS:-100} images=${IMAGES:-100} blobs=${BLOBS:-10} preview=${PREVIEW:-10000}
out=/tmp/ecrl-bench
mkdir -p "$out"
log() { echo "[gc] $*" >&2; }
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
one_ecrld_bench gc
env_=(-u DBUS_SESSION_BUS_ADDRESS "ECRL_LOG=warn" "ECRL_DATA_DIR=$work/data"
    "ECRL_SOCKET=$work/ecrl.sock" "ECRL_REGISTRY_ADDR=127.0.0.1:$port"
    "XDG_CONFIG_HOME=$work/config")
ecrl() { env "${env_[@]}" "$bin/ecrl" "$@"; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
start() {
    stop ecrld_pid
    rm -rf "$work/data" "$work/config"
    # Short enough that the stray uploads are garbage after a pause, long enough for every
    # push of the load to send its manifest.
    printf 'registry:\n  deleted_blob_grace: 1s\n  upload_expiry: 10s\n' >"$work/config.yml"
    env "${env_[@]}" "$bin/ecrld" --anonymous all --config "$work/config.yml" \
        >"$work/ecrld.log" 2>&1 &
    ecrld_pid=$!
    wait_up "$port" "$ecrld_pid" "$work/ecrld.log"
}
push_rate() { # repo count: blobs per second of a 16-client 4 KiB push
    "$loader" push-small --url "http://127.0.0.1:$port" --repo "$1" --count "$2" \
        --size 4096 --concurrency 16 --no-head-check | python3 -c '
import json, sys
r = json.load(sys.stdin)
if "error" in r: sys.exit("push-small: " + r["error"])
print(r["blobs_per_s"])'
}

start
log "seeding $repos × $images images × $blobs blobs, and $preview images in big/preview"
seed=$(python3 bench/gc_seed.py "http://127.0.0.1:$port" "$repos" "$images" "$blobs" 4096 8 \
    "$preview")
log "seeded: $seed"
# Garbage: uploads no manifest ever references.
python3 - "$port" <<'PY'
import hashlib, http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(1000):
    data = f"stray upload {i}".encode() * 200
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    c.request("POST", f"/v2/gc/stray/blobs/uploads/?digest={d}", body=data)
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
PY
sleep 11
files=$(find "$work/data/blobs" -type f | wc -l)
log "store: $files blob files"

t0=$(now)
gc_json=$(ecrl gc --output json)
t1=$(now)
gc_s=$(secs "$t0" "$t1")
log "gc alone: ${gc_s}s: $gc_json"

idle=$(push_rate load/idle 4000)
log "push idle: $idle blobs/s"
(while [ ! -e "$work/stop" ]; do ecrl gc -q >/dev/null; done) &
gc_loop=$!
busy=$(push_rate load/busy 4000)
touch "$work/stop"
wait "$gc_loop"
log "push while collecting: $busy blobs/s"

printf '{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":100},"action":{"type":"expire"}}]}' \
    >"$work/policy.json"
ecrl repo lifecycle set big/preview -f "$work/policy.json" >/dev/null
t0=$(now)
expiring=$(ecrl repo lifecycle preview big/preview --output json | jq '.summary.expiringImageTotalCount')
t1=$(now)
preview_s=$(secs "$t0" "$t1")
log "lifecycle preview of $preview images: ${preview_s}s, $expiring expiring"

# fsck against a hot pull, on a fresh store holding one 1 GiB image.
start
python3 bench/big_image.py "$work/layout" 256 bench/gc.sh
skopeo copy --preserve-digests -q --dest-tls-verify=false "oci:$work/layout:1" \
    "docker://127.0.0.1:$port/fsck/big:1" >&2
image_bytes=$(du -sb "$work/layout/blobs" | cut -f1)
pull() {
    local base="http://127.0.0.1:$port/v2/fsck/big" d size
    local -a pids=()
    curl -sf -o /dev/null "$base/manifests/1" -H 'Accept: application/vnd.oci.image.manifest.v1+json'
    while read -r d size; do
        curl -sf -o /dev/null "$base/blobs/$d" &
        pids+=($!)
    done <"$work/blobs"
    for p in "${pids[@]}"; do wait "$p"; done
}
pull
pull
sync
t0=$(now); pull; t1=$(now)
pull_s=$(secs "$t0" "$t1")
t0=$(now)
fsck_json=$(ecrl fsck --output json)
t1=$(now)
fsck_s=$(secs "$t0" "$t1")
log "hot pull ${pull_s}s, fsck ${fsck_s}s: $(jq -c '{blobsChecked, bytesChecked, problems: (.problems | length)}' <<<"$fsck_json")"
stop ecrld_pid

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"
python3 - "$out/gc.json" <<PY
import json, sys
gc = json.loads('''$gc_json''')
data = {"commit": "$commit", "seed": json.loads('''$seed'''), "blob_files": $files,
        "gc_alone_s": $gc_s, "gc": gc, "push_idle_per_s": $idle, "push_busy_per_s": $busy,
        "preview_images": $preview, "preview_s": $preview_s, "preview_expiring": $expiring,
        "image_bytes": $image_bytes, "hot_pull_s": $pull_s, "fsck_s": $fsck_s}
json.dump(data, open(sys.argv[1], "w"), indent=2)
r_push = $busy / $idle
r_fsck = $pull_s / $fsck_s
print(f"Store: {data['blob_files']} blob files in {data['seed']['images'] + data['seed']['preview_images']} images; ecrl {data['commit']}\\n")
print("| measure | value | target |")
print("|---|---|---|")
print(f"| ecrl gc, whole store (wall, CLI included) | {$gc_s:.2f} s (daemon {gc['durationMs']} ms; {gc['linksRemoved']} links, {gc['blobsRemoved']} files removed) | ≤ 10 s |")
print(f"| 4 KiB pushes, 16 clients, idle | {$idle:.0f}/s | |")
print(f"| the same while collections run back to back | {$busy:.0f}/s ({r_push:.2f} of idle) | ≥ 0.80 |")
print(f"| lifecycle preview, {$preview} images (CLI's whole run) | {$preview_s:.2f} s ({$expiring} expiring) | ≤ 1 s |")
print(f"| hot pull of 1 GiB (curl, 5 blobs at once) | {$pull_s:.2f} s | |")
print(f"| ecrl fsck of the same GiB | {$fsck_s:.2f} s ({r_fsck:.2f} of the pull's speed) | ≥ 0.80 |")
PY
