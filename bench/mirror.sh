#!/usr/bin/env bash
# `ecrl mirror sync` against `skopeo copy`, side by side in one run (medians of RUNS rounds,
# the tools interleaved and their order alternated each round so drift hits both):
#  1. ecrl -> distribution: a 1 GiB image (4 x 256 MiB layers of random bytes, uncompressed
#     tars) from ecrld to CNCF distribution (Debian's docker-registry), plain HTTP on loopback;
#  2. distribution -> ecrl: the same image back, into a fresh ecrld;
#  3. re-sync: `ecrl mirror sync --all-tags` of a distribution repository of 50 small tagged
#     images that ecrl already mirrored and that did not change (what a periodic mirror costs
#     when there is nothing to do), with `skopeo sync` of the same as a reference.
# Every copy of 1 and 2 goes to an empty destination, so each one moves all the bytes.
#
# Usage: bench/mirror.sh [RUNS]     (RUNS defaults to $RUNS, else 3; needs skopeo,
#        docker-registry, python3, curl, jq, bc)
#   ECRL_BENCH_BUILD=0       measure target/release as it is (no cargo build first)
#   ECRL_BENCH_ONLY_SKOPEO=1 run only the skopeo side (e.g. while `ecrl mirror sync` does not
#                            exist): image, registries, cleanup, timing and table all the same
#   ECRL_BENCH_LAYER_MIB=N   layer size (default 256; 4 layers)
# Results: a markdown table on stdout, the raw figures in /tmp/ecrl-bench/mirror.json.
# Disk: at most about 4 GiB at a time (source ecrld, distribution, destination ecrld, and the
# OCI layout until it is pushed), all under one work dir in /tmp, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-${RUNS:-3}}
mib=${ECRL_BENCH_LAYER_MIB:-256}
only_skopeo=${ECRL_BENCH_ONLY_SKOPEO:-0}
ntags=50
out=/tmp/ecrl-bench
mkdir -p "$out"
log() { echo "[mirror] $*" >&2; }

if [ "${ECRL_BENCH_BUILD:-1}" != 0 ]; then
    cargo build --release --locked --bins >&2
fi
bin=$PWD/target/release
for tool in skopeo docker-registry python3 curl jq bc; do
    command -v "$tool" >/dev/null || { log "needs $tool"; exit 2; }
done
if [ "$only_skopeo" != 1 ] && ! "$bin/ecrl" mirror sync --help >/dev/null 2>&1; then
    log "$bin/ecrl has no 'mirror sync': build it, or run with ECRL_BENCH_ONLY_SKOPEO=1"
    exit 2
fi

work=$(mktemp -d /tmp/ecrl-mirror-bench.XXXXXX)
mkdir -p "$work/docker-config"
src_pid= dst_pid= dist_pid=
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
cleanup() {
    stop src_pid
    stop dst_pid
    stop dist_pid
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Three free loopback ports, taken at once so they differ.
read -r src_port dst_port dist_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))')

# ecrld gets its settings from the environment, and so does every `ecrl` run against it (the
# CLI learns which registry is its own from ECRL_REGISTRY_ADDR). No config file or docker
# login of the user's takes part: XDG_CONFIG_HOME and DOCKER_CONFIG point into the work dir.
# Without a session bus there is no keyring, so the master key of each fresh (encrypted) data
# dir goes to <config dir>/keys and leaves with the work dir, not into the user's keyring.
ecrl_env() { # name (src or dst): the environment of that daemon, for env(1)
    local port=$src_port
    [ "$1" = dst ] && port=$dst_port
    echo "-u DBUS_SESSION_BUS_ADDRESS -u DISPLAY ECRL_LOG=warn" \
        "ECRL_DATA_DIR=$work/$1-data ECRL_SOCKET=$work/$1.sock ECRL_REGISTRY_ADDR=127.0.0.1:$port" \
        "XDG_CONFIG_HOME=$work/$1-config DOCKER_CONFIG=$work/docker-config"
}
start_ecrld() { # name (src or dst), on an empty data dir
    local port=$src_port
    [ "$1" = dst ] && port=$dst_port
    stop "$1_pid"
    rm -rf "${work:?}/$1-data" "$work/$1-config" "$work/$1.sock"
    # shellcheck disable=SC2046
    env $(ecrl_env "$1") "$bin/ecrld" --anonymous all >"$work/$1.log" 2>&1 &
    printf -v "$1_pid" '%s' $!
    wait_up "$port" "$!" "$work/$1.log"
}
ecrl_at() { # name (src or dst), ecrl arguments...
    local name=$1
    shift
    # shellcheck disable=SC2046
    env $(ecrl_env "$name") "$bin/ecrl" "$@"
}

# distribution, plain HTTP, no auth, deletes on; stopped, wiped and started again to empty it
# (the sure way: nothing of the round before, cached or half uploaded, survives).
write_dist_config "$dist_port"
start_dist() {
    stop dist_pid
    rm -rf "${work:?}/dist-data"
    docker-registry serve "$work/dist.yml" >"$work/dist.log" 2>&1 &
    dist_pid=$!
    wait_up "$dist_port" "$dist_pid" "$work/dist.log"
}

disk_speed

# --- The image: an OCI layout of 4 uncompressed tar layers, each one file of random bytes.
log "generating 4 x $mib MiB random layers as an OCI layout"
python3 bench/big_image.py "$work/layout" "$mib" bench/mirror.sh
image_bytes=$(du -sb "$work/layout/blobs" | cut -f1)

manifest_digest() { # port, repo, tag: the digest the registry answers for it (empty if none)
    curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$1/v2/$2/manifests/$3" |
        tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}

start_ecrld src
start_dist
log "ecrld (source) on 127.0.0.1:$src_port, distribution on 127.0.0.1:$dist_port," \
    "ecrld (destination) on 127.0.0.1:$dst_port; work dir $work"
# skopeo always gets --preserve-digests: without it, it gzips uncompressed layers on their way
# to a registry (1 GiB of random bytes through gzip, on the clock), which a mirror must not do
# (new digests) and ecrl does not do. skopeo also remembers where it saw each blob
# (/var/lib/containers/cache/blob-info-cache-v1.boltdb) and may first try to mount it from
# there: on a fresh destination that fails and it uploads, one request more per blob.
skopeo_copy=(skopeo copy --preserve-digests)
log "pushing the image into ecrld as bench/big:1"
"${skopeo_copy[@]}" -q --dest-tls-verify=false "oci:$work/layout:1" \
    "docker://127.0.0.1:$src_port/bench/big:1" >&2
digest=$(cat "$work/digest")
got=$(manifest_digest "$src_port" bench/big 1)
[ "$got" = "$digest" ] || { log "ecrld serves bench/big:1 as '$got', not $digest"; exit 1; }
rm -rf "${work:?}/layout" # ecrld holds it now: 1 GiB less on disk
# Read every layer from ecrld once, untimed, so the first timed copy does not pay alone for
# bringing the source's blobs into the page cache.
while read -r layer; do
    curl -sf -o /dev/null "http://127.0.0.1:$src_port/v2/bench/big/blobs/$layer"
done <"$work/layers"
sync # no write-back of the generation and the push left to land on the first timed copy
log "image $digest: $image_bytes bytes"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

now() { date +%s.%N; }
# timed NAME COMMAND...: runs it, its output in $work/NAME.out and .err; seconds in $T.
timed() {
    local name=$1 t0 t1 rc=0
    shift
    t0=$(now)
    "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    t1=$(now)
    if [ "$rc" != 0 ]; then
        log "$name failed (exit $rc): $*"
        tail -20 "$work/$name.err" >&2
        exit 1
    fi
    T=$(echo "$t1 - $t0" | bc)
}
expect_digest() { # port, repo, tag, who
    local got
    got=$(manifest_digest "$1" "$2" "$3")
    if [ "$got" != "$digest" ]; then
        log "after $4, 127.0.0.1:$1/$2:$3 is '${got:-missing}', not $digest"
        exit 1
    fi
}
# The summary `ecrl ... --output json` prints: fail unless its counts are as expected.
count() { jq -r "(.$1 // 0) | if type == \"array\" then length else . end" "$2"; }
expect_summary() { # file, copied (a count, or "any>0"), unchanged (a count, or "any"); failed 0
    local copied unchanged failed
    copied=$(count copied "$1")
    unchanged=$(count unchanged "$1")
    failed=$(count failed "$1")
    if [ "$failed" != 0 ] || { [ "$2" = "any>0" ] && [ "$copied" = 0 ]; } ||
        { [ "$2" != "any>0" ] && [ "$copied" != "$2" ]; } ||
        { [ "$3" != any ] && [ "$unchanged" != "$3" ]; }; then
        log "unexpected summary (copied $copied, unchanged $unchanged, failed $failed;" \
            "wanted copied $2, unchanged $3, failed 0):"
        cat "$1" >&2
        exit 1
    fi
}

skopeo_tls=(--src-tls-verify=false --dest-tls-verify=false)
declare -a skopeo_to_dist=() ecrl_to_dist=() skopeo_from_dist=() ecrl_from_dist=()

# Direction 1: from the source ecrld into a distribution started afresh on an empty root.
to_dist() { # tool, round
    start_dist
    if [ "$1" = skopeo ]; then
        timed "to-dist-skopeo-$2" "${skopeo_copy[@]}" "${skopeo_tls[@]}" \
            "docker://127.0.0.1:$src_port/bench/big:1" "docker://127.0.0.1:$dist_port/bench/big:1"
        skopeo_to_dist+=("$T")
    else
        timed "to-dist-ecrl-$2" ecrl_at src mirror sync bench/big:1 \
            "127.0.0.1:$dist_port/bench/big:1" --output json
        expect_summary "$work/to-dist-ecrl-$2.out" "any>0" any
        ecrl_to_dist+=("$T")
    fi
    expect_digest "$dist_port" bench/big 1 "$1's copy into distribution"
}

# Direction 2: from distribution (holding the image the last copy of direction 1 left, whose
# digest was checked) into a SECOND ecrld started on an empty data dir for every copy. Not into
# the source ecrld: its store already holds every blob of the image (bench/big:1), and blobs
# are stored once however many repositories hold them, so a copy there moves no new bytes to
# disk. `ecrl repo delete --force` of the destination repository would not help either: the
# blobs stay while bench/big holds them, and a deleted image's blobs leave the disk only
# after registry.deleted_blob_grace (15 min) or at the next start. A fresh daemon is an
# empty destination for sure, for both tools alike.
from_dist() { # tool, round
    start_ecrld dst
    if [ "$1" = skopeo ]; then
        timed "from-dist-skopeo-$2" "${skopeo_copy[@]}" "${skopeo_tls[@]}" \
            "docker://127.0.0.1:$dist_port/bench/big:1" "docker://127.0.0.1:$dst_port/bench/copy:1"
        skopeo_from_dist+=("$T")
    else
        timed "from-dist-ecrl-$2" ecrl_at dst mirror sync "127.0.0.1:$dist_port/bench/big:1" \
            bench/copy:1 --output json
        expect_summary "$work/from-dist-ecrl-$2.out" "any>0" any
        ecrl_from_dist+=("$T")
    fi
    expect_digest "$dst_port" bench/copy 1 "$1's copy into ecrld"
}

# One untimed copy first: the first copy of a run was always the slowest here (round 1's
# first ecrl -> distribution copy took 1.5-2x the others), whichever tool made it.
log "warm-up: one untimed copy into distribution"
start_dist
"${skopeo_copy[@]}" -q "${skopeo_tls[@]}" "docker://127.0.0.1:$src_port/bench/big:1" \
    "docker://127.0.0.1:$dist_port/bench/big:1" >&2

last() { if [ "$#" -gt 0 ]; then printf '%.2f' "${!#}"; else echo -; fi; }
for round in $(seq 1 "$runs"); do
    if [ "$only_skopeo" = 1 ]; then
        order=(skopeo)
    elif [ $((round % 2)) = 1 ]; then
        order=(skopeo ecrl)
    else
        order=(ecrl skopeo)
    fi
    for tool in "${order[@]}"; do to_dist "$tool" "$round"; done
    for tool in "${order[@]}"; do from_dist "$tool" "$round"; done
    log "round $round (${order[*]}): ecrl->distribution skopeo $(last "${skopeo_to_dist[@]}")s" \
        "ecrl $(last "${ecrl_to_dist[@]}")s; distribution->ecrl skopeo" \
        "$(last "${skopeo_from_dist[@]}")s ecrl $(last "${ecrl_from_dist[@]}")s"
done
stop dst_pid
rm -rf "${work:?}/dst-data"

# --- Re-sync: 50 small images (one shared 1 KiB layer, each its own config, so 50 distinct
# manifests) tagged t1..t50 in distribution's bench/tags, pushed straight over the API.
log "pushing $ntags small images into distribution's bench/tags"
python3 - "http://127.0.0.1:$dist_port" bench/tags "$ntags" <<'PY'
import hashlib, io, json, os, sys, tarfile, urllib.parse, urllib.request
base, repo, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

def request(method, url, data=None, ctype=None):
    r = urllib.request.Request(url, data=data, method=method)
    if ctype:
        r.add_header("Content-Type", ctype)
    return urllib.request.urlopen(r)

def push_blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = request("POST", f"{base}/v2/{repo}/blobs/uploads/").headers["Location"]
    loc = urllib.parse.urljoin(base, loc)
    loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(d)
    request("PUT", loc, data, "application/octet-stream").close()
    return {"digest": d, "size": len(data)}

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    info = tarfile.TarInfo("hello.txt")
    payload = os.urandom(1024)
    info.size = len(payload)
    t.addfile(info, io.BytesIO(payload))
layer = push_blob(buf.getvalue())
layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
for i in range(1, n + 1):
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"n": str(i)}},
              "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
    c = push_blob(json.dumps(config).encode())
    c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": c, "layers": [layer]}
    request("PUT", f"{base}/v2/{repo}/manifests/t{i}", json.dumps(m).encode(),
            m["mediaType"]).close()
PY
tags=$(curl -sf "http://127.0.0.1:$dist_port/v2/bench/tags/tags/list" | jq '.tags | length')
[ "$tags" = "$ntags" ] || { log "distribution lists $tags tags in bench/tags, not $ntags"; exit 1; }

declare -a ecrl_resync=() skopeo_resync=()
if [ "$only_skopeo" != 1 ]; then
    timed resync-first ecrl_at src mirror sync --all-tags "127.0.0.1:$dist_port/bench/tags" \
        bench/tags --output json
    expect_summary "$work/resync-first.out" "$ntags" 0
fi
# skopeo sync of the same, for reference, into ecrld's skopeo/tags: for each tag it reads the
# source's manifest and skips the image when the destination already has that digest
# ("Skipping: image already present at destination").
skopeo_sync() {
    skopeo sync --preserve-digests --src docker --dest docker "${skopeo_tls[@]}" \
        "127.0.0.1:$dist_port/bench/tags" "127.0.0.1:$src_port/skopeo"
}
timed resync-skopeo-first skopeo_sync
got=$(curl -sf "http://127.0.0.1:$src_port/v2/skopeo/tags/tags/list" | jq '.tags | length')
[ "$got" = "$ntags" ] || { log "skopeo sync left $got tags in ecrld's skopeo/tags"; exit 1; }
for round in $(seq 1 "$runs"); do
    if [ "$only_skopeo" != 1 ]; then
        timed "resync-ecrl-$round" ecrl_at src mirror sync --all-tags \
            "127.0.0.1:$dist_port/bench/tags" bench/tags --output json
        expect_summary "$work/resync-ecrl-$round.out" 0 "$ntags"
        ecrl_resync+=("$T")
    fi
    timed "resync-skopeo-$round" skopeo_sync
    skopeo_resync+=("$T")
done

# --- The table and the raw figures.
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"
python3 - "$out/mirror.json" <<PY
import json, statistics, sys
def runs(s): return [float(x) for x in s.split()]
def med(xs): return statistics.median(xs) if xs else None
data = {
    "image": {"digest": "$digest", "bytes": $image_bytes, "layers": 4, "layer_mib": $mib},
    "runs": $runs, "only_skopeo": "$only_skopeo" == "1", "commit": "$commit",
    "machine": {"nproc": $(nproc), "disk": "$disk", "loadavg_before": "$load_before",
                "loadavg_after": "$load_after"},
    "ecrl_to_distribution": {"skopeo": runs("${skopeo_to_dist[*]}"),
                             "ecrl": runs("${ecrl_to_dist[*]}")},
    "distribution_to_ecrl": {"skopeo": runs("${skopeo_from_dist[*]}"),
                             "ecrl": runs("${ecrl_from_dist[*]}")},
    "resync_unchanged_${ntags}_tags": {"ecrl": runs("${ecrl_resync[*]}"),
                                       "skopeo_sync": runs("${skopeo_resync[*]}")},
}
for k in ("ecrl_to_distribution", "distribution_to_ecrl", "resync_unchanged_${ntags}_tags"):
    data[k]["median"] = {tool: med(xs) for tool, xs in list(data[k].items())}
json.dump(data, open(sys.argv[1], "w"), indent=2)

f = lambda x: "—" if x is None else f"{x:.2f}"
fs = lambda xs: ", ".join(f"{x:.2f}" for x in xs) or "—"
gbs = lambda x: "" if x is None else f" ({$image_bytes / x / 1e9:.2f} GB/s)"
print(f"Image: 4 × $mib MiB random layers, uncompressed ({$image_bytes / 2**30:.2f} GiB), "
      f"$runs rounds, ecrl {data['commit']}{' — skopeo only' if data['only_skopeo'] else ''}\n")
print("| direction | skopeo median s | ecrl median s | ecrl/skopeo | skopeo runs s | ecrl runs s |")
print("|---|---|---|---|---|---|")
for k, name in (("ecrl_to_distribution", "ecrl → distribution"),
                ("distribution_to_ecrl", "distribution → ecrl")):
    s, e = data[k]["median"]["skopeo"], data[k]["median"]["ecrl"]
    ratio = f"{e / s:.2f}" if s and e else "—"
    print(f"| {name} | {f(s)}{gbs(s)} | {f(e)}{gbs(e)} | {ratio} | {fs(data[k]['skopeo'])} "
          f"| {fs(data[k]['ecrl'])} |")
r = data["resync_unchanged_${ntags}_tags"]
print(f"\nRe-sync of $ntags unchanged tags: ecrl mirror sync --all-tags median "
      f"{f(r['median']['ecrl'])} s (runs: {fs(r['ecrl'])}); skopeo sync of the same (reference) "
      f"{f(r['median']['skopeo_sync'])} s (runs: {fs(r['skopeo_sync'])}).")
m = data["machine"]
print(f"\nMachine: {m['nproc']} cores; disk {m['disk']}; load average (1, 5, 15 min) "
      f"{m['loadavg_before']} before the rounds, {m['loadavg_after']} after (the copies alone "
      f"keep about 2 busy: more means something else ran too). Raw figures: {sys.argv[1]}")
PY
