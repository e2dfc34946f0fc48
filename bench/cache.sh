#!/usr/bin/env bash
# Pulls through an `ecrl mirror cache` rule against pulls straight from its upstream, side by
# side in one run (medians of RUNS rounds). The image: 1 GiB (4 x 256 MiB layers of random
# bytes, uncompressed tars) in CNCF distribution (Debian's docker-registry), plain HTTP on
# loopback, as bench/big:1. Each round, on an ecrld started afresh on an empty data dir with a
# new rule `up` -> distribution (so nothing is cached):
#  a. direct:  the pull straight from distribution;
#  b. first:   the first pull of up/bench/big:1 through ecrld (it fetches the manifest, then
#              each blob when it is asked for, streamed to the client while it is stored);
#  c. cached:  the second pull of the same (now from ecrld's store), once the read cache has
#              read the fetched blobs into memory (it does so at once, in the background, at
#              idle priority: `ecrl daemon status` shows them held; a pull racing that runs at
#              the disk's speed instead);
#  d. own hot: another image of the same shape (its own random bytes, so no blob is shared
#              with c) pushed into that ecrld as own/big:1, pulled twice untimed, then timed:
#              ecrl's own pull of a hot image, the reference for c.
# The order of a and b alternates each round (c always follows b) so drift hits both. Each
# ecrld is timed only once its read cache is prepared (`ecrl daemon status`: its reserve of
# page cache, which a daemon that has run for a minute has), as a long-running daemon is.
# Targets: b/a <= 1.2 (a first pull through the cache costs at most 20% more than going to
# the upstream yourself) and c/d <= 1.0 (cached content is served as fast as ecrl's own).
#
# A "pull" is what a registry client does, in curl: GET the manifest (Accept: OCI and Docker
# manifests and indexes), then GET every blob (the config and the 4 layers, all at once in
# parallel), throwing the bytes away; timed on the wall clock from the first request to the
# last byte. The blob list is the image's, known beforehand (a client parses it out of the
# manifest in microseconds; a jq run would cost more than that on the clock); after the clock
# stops, the manifest received must hash to the image's digest and every blob must have come
# whole (curl's byte count equals its size). The client does not hash the blobs: only the
# registries' own work is timed (ecrld checks each fetched blob against its digest itself).
# After b, ecrld's log must show 5 blob fetches ("pull-through cache: fetched a blob") and
# after c still 5, so b is a real fetch and c a real hit.
#
# Usage: bench/cache.sh [RUNS]     (RUNS defaults to $RUNS, else 3; needs skopeo,
#        docker-registry, python3, curl, jq, bc, sha256sum)
#   ECRL_BENCH_BUILD=0       measure target/release as it is (no cargo build first)
#   ECRL_BENCH_PERF=1        record ecrld with `perf record -g` during each timed pull
#                            through it (/tmp/ecrl-bench/perf-{first,cached,own}-N.data)
#   ECRL_READ_CACHE=SIZE     ecrld's read cache (storage.read_cache; 0 turns it off)
#   ECRL_BENCH_VERIFY=1      the client hashes every blob as it arrives and checks its digest,
#                            as docker, skopeo and containerd do (on both sides of each ratio)
#   ECRL_BENCH_CLIENT=docker each pull is a `docker pull` (the running dockerd downloads,
#                            verifies and unpacks the layers; the image is removed after each)
#   ECRL_BENCH_LAYER_MIB=N   layer size (default 256; 4 layers)
# Results: a markdown table on stdout, the raw figures in /tmp/ecrl-bench/cache.json.
# Disk: at most about 5 GiB at a time (the two OCI layouts, distribution, ecrld's store),
# all under one work dir in /tmp, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-${RUNS:-3}}
mib=${ECRL_BENCH_LAYER_MIB:-256}
verify=${ECRL_BENCH_VERIFY:-0}
client=${ECRL_BENCH_CLIENT:-curl}
out=/tmp/ecrl-bench
mkdir -p "$out"
log() { echo "[cache] $*" >&2; }

if [ "${ECRL_BENCH_BUILD:-1}" != 0 ]; then
    cargo build --release --locked --bins >&2
fi
bin=$PWD/target/release
for tool in skopeo docker-registry python3 curl jq bc sha256sum; do
    command -v "$tool" >/dev/null || { log "needs $tool"; exit 2; }
done
if [ "$client" = docker ] && ! docker version >/dev/null 2>&1; then
    log "ECRL_BENCH_CLIENT=docker needs a running dockerd"
    exit 2
fi
if ! "$bin/ecrl" mirror cache create --help >/dev/null 2>&1; then
    log "$bin/ecrl has no 'mirror cache create': build it first"
    exit 2
fi

work=$(mktemp -d /tmp/ecrl-cache-bench.XXXXXX)
mkdir -p "$work/docker-config"
ecrld_pid='' dist_pid=''
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
# Each ecrld's log is kept in $out/cache-ecrld.log (what it fetched, in how many chunks).
: >"$out/cache-ecrld.log"
keep_log() { if [ -f "$work/ecrld.log" ]; then cat "$work/ecrld.log" >>"$out/cache-ecrld.log"; fi; }
cleanup() {
    stop ecrld_pid
    stop dist_pid
    keep_log
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free loopback ports, taken at once so they differ.
read -r ecrl_port dist_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))')

# ecrld gets its settings from the environment, and so does every `ecrl` run against it. No
# config file or docker login of the user's takes part: XDG_CONFIG_HOME and DOCKER_CONFIG
# point into the work dir, and without a session bus the master key of each fresh (encrypted)
# data dir goes to <config dir>/keys and leaves with the work dir. Warnings only, except the
# cache's own lines (info), which tell whether a pull fetched from the upstream.
ecrl_env=(-u DBUS_SESSION_BUS_ADDRESS -u DISPLAY "ECRL_LOG=warn,ecrld::mirror::cache=info"
    "ECRL_DATA_DIR=$work/ecrl-data" "ECRL_SOCKET=$work/ecrl.sock"
    "ECRL_REGISTRY_ADDR=127.0.0.1:$ecrl_port" "XDG_CONFIG_HOME=$work/ecrl-config"
    "DOCKER_CONFIG=$work/docker-config" ${ECRL_READ_CACHE:+"ECRL_READ_CACHE=$ECRL_READ_CACHE"})
# A fresh ecrld (empty data dir, anonymous pulls and pushes) with the rule up -> distribution.
start_ecrld() {
    stop ecrld_pid
    keep_log
    rm -rf "${work:?}/ecrl-data" "$work/ecrl-config" "$work/ecrl.sock"
    env "${ecrl_env[@]}" "$bin/ecrld" --anonymous all >"$work/ecrld.log" 2>&1 &
    ecrld_pid=$!
    wait_up "$ecrl_port" "$ecrld_pid" "$work/ecrld.log"
    read_cache_ready
    env "${ecrl_env[@]}" "$bin/ecrl" mirror cache create up "127.0.0.1:$dist_port" \
        >"$work/rule.out" 2>&1 || {
        log "ecrl mirror cache create up 127.0.0.1:$dist_port failed:"
        cat "$work/rule.out" >&2
        exit 1
    }
}
read_cache_ready() { # waits (up to 2 minutes) until the read cache's reserve is prepared
    local status
    for _ in $(seq 1 240); do
        status=$(env "${ecrl_env[@]}" "$bin/ecrl" --output json daemon status 2>/dev/null) || true
        if jq -e '.readCache == null or .readCache.preparedBytes + .readCache.heldBytes
                  >= .readCache.budgetBytes' <<<"$status" >/dev/null 2>&1; then
            return
        fi
        sleep 0.5
    done
    log "ecrld's read cache was not prepared after 2 minutes: $(jq -c .readCache <<<"$status")"
    exit 1
}
warmed() { # waits (up to 30 s) until the read cache holds the fetched image (it warms it)
    local held=0
    for _ in $(seq 1 60); do
        held=$(env "${ecrl_env[@]}" "$bin/ecrl" --output json daemon status 2>/dev/null |
            jq '.readCache.heldBytes // 0') || held=0
        [ "$held" -ge "$layer_bytes" ] && return
        sleep 0.5
    done
    log "the read cache holds $held bytes of the fetched layers' $layer_bytes after 30 s: going on"
}
fetches() { # what ecrld logged it fetched from the upstream: "BLOBS MANIFESTS"
    echo "$(grep -c 'pull-through cache: fetched a blob' "$work/ecrld.log" || true)" \
        "$(grep -c 'pull-through cache: fetched a manifest' "$work/ecrld.log" || true)"
}

# distribution, plain HTTP, no auth; started once, it holds the image all along.
write_dist_config "$dist_port"
docker-registry serve "$work/dist.yml" >"$work/dist.log" 2>&1 &
dist_pid=$!
wait_up "$dist_port" "$dist_pid" "$work/dist.log"

disk_speed

# --- The image: an OCI layout of 4 uncompressed tar layers, each one file of random bytes
# (bench/big_image.py), and the list of its blobs ("digest size" lines, config first).
log "generating 4 x $mib MiB random layers as an OCI layout"
python3 bench/big_image.py "$work/layout" "$mib" bench/cache.sh
mkdir -p "$work/own"
python3 bench/big_image.py "$work/own/layout" "$mib" bench/cache.sh-own
image_bytes=$(du -sb "$work/layout/blobs" | cut -f1)
digest=$(cat "$work/digest")
layer_bytes=$(tail -n +2 "$work/blobs" | awk '{ s += $2 } END { print s }')

# skopeo always gets --preserve-digests: without it, it gzips uncompressed layers on their way
# to a registry (new digests).
log "pushing the image into distribution as bench/big:1"
skopeo copy --preserve-digests -q --dest-tls-verify=false "oci:$work/layout:1" \
    "docker://127.0.0.1:$dist_port/bench/big:1" >&2

now() { date +%s.%N; }
# CPU seconds so far of the machine (all cores, not idle or iowait) and of each process
# that takes part in a pull: "machine ecrld distribution dockerd containerd".
cpu_now() {
    local tck p out
    tck=$(getconf CLK_TCK)
    out=$(awk -v t="$tck" '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8)/t}' /proc/stat)
    for p in "$ecrld_pid" "$dist_pid" "$(pgrep -xo dockerd)" "$(pgrep -xo containerd)"; do
        out+=" $(awk -v t="$tck" '{printf "%.2f", ($14+$15)/t}' "/proc/$p/stat" 2>/dev/null || echo 0)"
    done
    echo "$out"
}
cpu_delta() { # before after
    python3 -c 'import sys; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]
print(" ".join(f"{n} {y-x:.2f}" for n,x,y in zip(["machine","ecrld","distribution","dockerd","containerd"],a,b)))' "$1" "$2"
}
accept="application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"
accept+=",application/vnd.docker.distribution.manifest.v2+json"
accept+=",application/vnd.docker.distribution.manifest.list.v2+json"
# pull NAME PORT REPO [DIR]: the tag 1 of the image described in DIR (default $work: its
# `blobs` and `digest` files) pulled as a client does (see the top); seconds in $T.
pull() {
    local name=$1 base="http://127.0.0.1:$2/v2/$3" dir=${4:-$work} t0 t1 i=0 d size got p rc=0
    local want
    want=$(cat "$dir/digest")
    if [ "$client" = docker ]; then
        local ref="127.0.0.1:$2/$3:1" c0 c1
        c0=$(cpu_now)
        t0=$(now)
        docker pull -q "$ref" >/dev/null || { log "$name: docker pull $ref failed"; exit 1; }
        t1=$(now)
        c1=$(cpu_now)
        T=$(echo "$t1 - $t0" | bc)
        log "$name: ${T}s; CPU-s $(cpu_delta "$c0" "$c1")"
        docker image inspect --format '{{json .RepoDigests}}' "$ref" | grep -q "@$want" ||
            { log "$name: docker pulled $ref, but not as $want"; exit 1; }
        docker rmi -f "$ref" >/dev/null
        return
    fi
    local -a pids=()
    t0=$(now)
    if ! curl -sfL -H "Accept: $accept" -o "$work/$name.manifest" "$base/manifests/1"; then
        log "$name: GET $base/manifests/1 failed"
        exit 1
    fi
    while read -r d size; do
        if [ "$verify" = 1 ]; then
            # As docker, skopeo and containerd do: every blob hashed as it arrives.
            (set -o pipefail; curl -sfL "$base/blobs/$d" | sha256sum | cut -d' ' -f1 \
                >"$work/$name.$i") &
        else
            curl -sfL -o /dev/null -w '%{size_download}' "$base/blobs/$d" >"$work/$name.$i" &
        fi
        pids+=($!)
        i=$((i + 1))
    done <"$dir/blobs"
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    t1=$(now)
    T=$(echo "$t1 - $t0" | bc)
    [ "$rc" = 0 ] || { log "$name: a blob GET under $base failed (curl exit $rc)"; exit 1; }
    got=sha256:$(sha256sum <"$work/$name.manifest" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { log "$name: got manifest $got, not $want"; exit 1; }
    i=0
    while read -r d size; do
        got=$(cat "$work/$name.$i")
        if [ "$verify" = 1 ]; then
            [ "sha256:$got" = "$d" ] || { log "$name: blob $d hashed to sha256:$got"; exit 1; }
        else
            [ "$got" = "$size" ] || { log "$name: got $got bytes of $d, not $size"; exit 1; }
        fi
        i=$((i + 1))
    done <"$dir/blobs"
}
expect_fetches() { # blobs manifests what
    local got
    got=$(fetches)
    if [ "$got" != "$1 $2" ]; then
        log "after $3, ecrld logged '$got' fetches (blobs manifests), not '$1 $2':"
        tail -20 "$work/ecrld.log" >&2
        exit 1
    fi
}

declare -a direct=() first=() cached=() own=()
# Each timed pull starts with nothing left to write back (sync) from what came before.
pull_direct() { # round
    sync
    pull "direct-$1" "$dist_port" bench/big
    direct+=("$T")
}
perf_pid=''
perf_start() { # name: with ECRL_BENCH_PERF, ecrld is recorded until perf_stop
    if [ -n "${ECRL_BENCH_PERF:-}" ]; then
        perf record -q -g -p "$ecrld_pid" -o "$out/perf-$1.data" 2>/dev/null &
        perf_pid=$!
    fi
}
perf_stop() {
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    perf_pid=''
}
pull_through() { # round: the first and the second pull through the fresh ecrld
    sync
    perf_start "first-$1"
    pull "first-$1" "$ecrl_port" up/bench/big
    perf_stop
    first+=("$T")
    expect_fetches 5 1 "the first pull through ecrld"
    warmed
    sync
    perf_start "cached-$1"
    pull "cached-$1" "$ecrl_port" up/bench/big
    perf_stop
    cached+=("$T")
    expect_fetches 5 1 "the second pull through ecrld"
}
pull_own() { # round: the other image pushed into ecrld's own/big, pulled twice untimed, timed
    skopeo copy --preserve-digests -q --dest-tls-verify=false "oci:$work/own/layout:1" \
        "docker://127.0.0.1:$ecrl_port/own/big:1" >&2
    pull "own-untimed-$1" "$ecrl_port" own/big "$work/own"
    pull "own-untimed-$1" "$ecrl_port" own/big "$work/own"
    sync
    perf_start "own-$1"
    pull "own-$1" "$ecrl_port" own/big "$work/own"
    perf_stop
    own+=("$T")
}

log "distribution on 127.0.0.1:$dist_port, ecrld on 127.0.0.1:$ecrl_port; work dir $work"
log "image $digest: $image_bytes bytes"
# Warm-up, untimed: one pull straight from distribution and one through a fresh ecrld (the
# first of each in a run was the slowest before, whoever made it).
log "warm-up: one direct pull and one pull through ecrld, untimed"
sync
pull warm-direct "$dist_port" bench/big
start_ecrld
pull warm-first "$ecrl_port" up/bench/big
expect_fetches 5 1 "the warm-up pull through ecrld"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

last() { if [ "$#" -gt 0 ]; then printf '%.2f' "${!#}"; else echo -; fi; }
for round in $(seq 1 "$runs"); do
    start_ecrld
    if [ $((round % 2)) = 1 ]; then
        order="direct, through"
        pull_direct "$round"
        pull_through "$round"
    else
        order="through, direct"
        pull_through "$round"
        pull_direct "$round"
    fi
    pull_own "$round"
    log "round $round ($order): direct $(last "${direct[@]}")s, first through ecrl" \
        "$(last "${first[@]}")s, cached $(last "${cached[@]}")s, own hot $(last "${own[@]}")s"
done
stop ecrld_pid

# --- The table and the raw figures.
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"
python3 - "$out/cache.json" <<PY
import json, statistics, sys
def runs(s): return [float(x) for x in s.split()]
pulls = {"direct": runs("${direct[*]}"), "first_through_ecrl": runs("${first[*]}"),
         "cached_second_through_ecrl": runs("${cached[*]}"), "own_hot_ecrl": runs("${own[*]}")}
med = {k: statistics.median(v) for k, v in pulls.items()}
ratio = lambda a, b: med[a] / med[b]
data = {
    "image": {"digest": "$digest", "bytes": $image_bytes, "layers": 4, "layer_mib": $mib},
    "runs": $runs, "commit": "$commit", "client": "$client",
    "client_verifies": $verify == 1 or "$client" == "docker",
    "machine": {"nproc": $(nproc), "disk": "$disk", "loadavg_before": "$load_before",
                "loadavg_after": "$load_after"},
    "pulls_s": pulls, "median_s": med,
    "ratios": {
        "first_through_over_direct": {"value": ratio("first_through_ecrl", "direct"),
                                      "target_at_most": 1.2},
        "cached_over_own_hot": {"value": ratio("cached_second_through_ecrl", "own_hot_ecrl"),
                                "target_at_most": 1.0},
    },
}
json.dump(data, open(sys.argv[1], "w"), indent=2)

print(f"Image: 4 × $mib MiB random layers, uncompressed ({$image_bytes / 2**30:.2f} GiB), "
      f"$runs rounds, ecrl {data['commit']}; "
      + ("pulls by docker pull (download, verify, unpack)\n" if "$client" == "docker" else
         "pulls by curl, the 5 blobs in parallel"
         + (", each hashed by the client\n" if $verify == 1 else "\n")))
print("| pull | median s | GB/s | runs s |")
print("|---|---|---|---|")
for k, name in (("direct", "(a) straight from distribution"),
                ("first_through_ecrl", "(b) first pull through ecrl (fetching)"),
                ("cached_second_through_ecrl", "(c) second pull through ecrl (cached)"),
                ("own_hot_ecrl", "(d) ecrl's own image, hot")):
    print(f"| {name} | {med[k]:.2f} | {$image_bytes / med[k] / 1e9:.2f} | "
          f"{', '.join(f'{x:.2f}' for x in pulls[k])} |")
print()
for k, name in (("first_through_over_direct", "first pull through / direct"),
                ("cached_over_own_hot", "cached second pull / own hot pull")):
    r = data["ratios"][k]
    ok = "met" if r["value"] <= r["target_at_most"] else "MISSED"
    print(f"- {name}: {r['value']:.2f} "
          f"(target ≤ {r['target_at_most']:.1f}: {ok})")
m = data["machine"]
print(f"\nMachine: {m['nproc']} cores; disk {m['disk']}; load average (1, 5, 15 min) "
      f"{m['loadavg_before']} before the rounds, {m['loadavg_after']} after. "
      f"Raw figures: {sys.argv[1]}")
PY
