#!/usr/bin/env bash
# Task start-up against plain docker, side by side in one run, as ratios:
#  1. `ecrl task run --wait` of a one-container task whose command exits at once, against
#     `docker run --rm` of the same image (hyperfine, medians over RUNS runs);
#  2. a task of 10 independent containers reaching RUNNING (`ecrl task run` + `ecrl task
#     wait --until RUNNING`), against starting the same containers with `docker run -d` one
#     after another (medians over ROUNDS rounds, alternating).
# Usage: bench/tasks.sh [RUNS] [ROUNDS]   (needs dockerd, hyperfine, /bin/busybox)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
rounds=${2:-7}
cargo build --release --locked --bins >&2
bin=$PWD/target/release
dir=$(mktemp -d)
export ECRL_DATA_DIR=$dir/data ECRL_SOCKET=$dir/ecrl.sock ECRL_REGISTRY_ADDR=127.0.0.1:0 HOME=$dir
image=ecrl-bench/busybox:tasks
cleanup() {
    docker ps -aq --filter label=ecrl-bench=1 | xargs -r docker rm -f >/dev/null 2>&1 || true
    "$bin/ecrl" daemon stop -q >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

# The image: busybox-static FROM scratch, pushed into ecrl.
mkdir "$dir/ctx"
cp /bin/busybox "$dir/ctx/"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n' >"$dir/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$dir/ctx" >/dev/null
"$bin/ecrl" daemon start -q >/dev/null
"$bin/ecrl" repo push "docker://$image" busybox:1 -q >/dev/null

one='{"family":"bench-one","containerDefinitions":[{"name":"a","image":"busybox:1","memory":32,"command":["true"]}]}'
echo "$one" | "$bin/ecrl" task register -f - -q >/dev/null
ten=$(python3 -c 'import json; print(json.dumps({"family":"bench-ten","containerDefinitions":[
  {"name":f"c{i}","image":"busybox:1","memory":32,"command":["sleep","600"],"stopTimeout":2} for i in range(10)]}))')
echo "$ten" | "$bin/ecrl" task register -f - -q >/dev/null
# Warm up: the engine pulls the image from ecrl once.
"$bin/ecrl" task run bench-one --wait -q >/dev/null

echo "== one container, command exits at once ($runs runs each)" >&2
hyperfine -N --warmup 2 --runs "$runs" --export-json "$dir/one.json" \
    "$bin/ecrl task run bench-one --wait -q" \
    "docker run --rm --label ecrl-bench=1 $image true" >&2

echo "== ten independent containers until running ($rounds rounds)" >&2
ecrl_times=()
docker_times=()
for round in $(seq 1 "$rounds"); do
    start=$(date +%s.%N)
    id=$("$bin/ecrl" task run bench-ten -q)
    "$bin/ecrl" task wait "$id" --until RUNNING -q >/dev/null
    end=$(date +%s.%N)
    ecrl_times+=("$(echo "$end - $start" | bc)")
    "$bin/ecrl" task stop "$id" -q >/dev/null

    start=$(date +%s.%N)
    for i in $(seq 0 9); do
        docker run -d --label ecrl-bench=1 --memory 32m "$image" sleep 600 >/dev/null
    done
    end=$(date +%s.%N)
    docker_times+=("$(echo "$end - $start" | bc)")
    docker ps -aq --filter label=ecrl-bench=1 | xargs -r docker rm -f >/dev/null
done

python3 - "$dir/one.json" "${ecrl_times[*]}" "${docker_times[*]}" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"]
e1, d1 = r[0]["median"], r[1]["median"]
print(f"one container:  ecrl task run --wait {e1*1000:.0f} ms, docker run --rm {d1*1000:.0f} ms "
      f"(medians) -> {e1/d1:.2f}x (target <= 1.3x)")
et = [float(x) for x in sys.argv[2].split()]
dt = [float(x) for x in sys.argv[3].split()]
e10, d10 = statistics.median(et), statistics.median(dt)
print(f"ten containers: ecrl task run until RUNNING {e10*1000:.0f} ms, 10 x docker run -d "
      f"{d10*1000:.0f} ms (medians of {len(et)}) -> {e10/d10:.2f}x (target <= 0.7x)")
PY
