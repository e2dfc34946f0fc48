#!/usr/bin/env bash
# `ecrl repo push` of a docker-archive against `docker push` and `skopeo copy` of the same
# image into the same daemon, side by side in one run (median of N), plus the push of the same
# image into a second repository when every blob already exists.
#
# The image: 4 layers of random data (gzip cannot shrink them), 1 GiB in all by default.
# Each first push goes to a fresh ecrld data dir so no blob exists beforehand.
# Usage: bench/push.sh [RUNS] [MiB per layer]   (needs dockerd running, skopeo, hyperfine no)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
mib=${2:-256}
cargo build --release --locked --bins >&2
bin=$PWD/target/release
work=$(mktemp -d /tmp/ecrl-push-bench.XXXXXX)
port=5077
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; docker rmi -f ecrl-bench/big:1 localhost:$port/bench/docker:1 >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "building a 4-layer image of ${mib} MiB random layers" >&2
mkdir -p "$work/ctx"
for i in 1 2 3 4; do head -c "$((mib << 20))" /dev/urandom > "$work/ctx/blob$i"; done
printf 'FROM scratch\nCOPY blob1 /b1\nCOPY blob2 /b2\nCOPY blob3 /b3\nCOPY blob4 /b4\n' > "$work/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t ecrl-bench/big:1 "$work/ctx" >/dev/null
rm -f "$work"/ctx/blob*
docker save -o "$work/image.tar" ecrl-bench/big:1

start_daemon() {
    [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null && sleep 0.5
    rm -rf "$work/data"
    ECRL_LOG=warn "$bin/ecrld" --data-dir "$work/data" --socket "$work/s.sock" \
        --registry-addr "127.0.0.1:$port" --anonymous all >"$work/ecrld.log" 2>&1 &
    echo $! > "$work/pid"
    for _ in $(seq 1 100); do [ -S "$work/s.sock" ] && return; sleep 0.05; done
    echo "ecrld did not start" >&2; exit 1
}
now() { date +%s.%N; }
time_of() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t1 - $t0" | bc; }

declare -a ecrl docker skopeo again
for run in $(seq 1 "$runs"); do
    start_daemon
    ecrl+=("$(time_of "$bin/ecrl" --socket "$work/s.sock" repo push "$work/image.tar" bench/ecrl:1)")
    again+=("$(time_of "$bin/ecrl" --socket "$work/s.sock" repo push "$work/image.tar" bench/again:1)")
    start_daemon
    docker tag ecrl-bench/big:1 "localhost:$port/bench/docker:1"
    docker+=("$(time_of docker push "localhost:$port/bench/docker:1")")
    start_daemon
    skopeo+=("$(time_of skopeo copy --dest-tls-verify=false "docker-archive:$work/image.tar" "docker://localhost:$port/bench/skopeo:1")")
    echo "run $run: ecrl ${ecrl[-1]}s (again ${again[-1]}s), docker push ${docker[-1]}s, skopeo ${skopeo[-1]}s" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
e=$(median "${ecrl[@]}"); d=$(median "${docker[@]}"); s=$(median "${skopeo[@]}"); a=$(median "${again[@]}")
echo "image: 4 x ${mib} MiB random layers; medians of $runs"
printf 'ecrl repo push (docker-archive)   %6.2f s\n' "$e"
printf 'docker push                       %6.2f s   (ecrl/docker = %.2f)\n' "$d" "$(echo "$e / $d" | bc -l)"
printf 'skopeo copy docker-archive:       %6.2f s   (ecrl/skopeo = %.2f)\n' "$s" "$(echo "$e / $s" | bc -l)"
printf 'ecrl repo push, all blobs exist   %6.2f s\n' "$a"
