#!/usr/bin/env bash
# ECS services (issue 24), against plain docker, side by side in one run:
#  1. a service of 10 replicas (one container each, ephemeral host ports) from
#     `ecrl service create` to runningCount 10, against the same 10 containers started with
#     `docker run -d` one after another (medians over ROUNDS rounds, alternating; target:
#     ecrl ≤ 0.7× docker);
#  2. a replica whose container is killed behind ecrl's back (`docker kill`): the time until
#     the service has 10 RUNNING tasks again (median over ROUNDS kills; target ≤ 2 s).
# Usage: bench/services.sh [ROUNDS]   (needs dockerd, /bin/busybox)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
if [ "${ECRL_BENCH_BUILD:-1}" != 0 ]; then
    cargo build --release --locked --bins >&2
fi
bin=$PWD/target/release
dir=$(mktemp -d)
export ECRL_DATA_DIR=$dir/data ECRL_SOCKET=$dir/ecrl.sock ECRL_REGISTRY_ADDR=127.0.0.1:0 HOME=$dir
image=ecrl-bench/busybox:tasks
cleanup() {
    docker ps -aq --filter label=ecrl-bench=1 | xargs -r docker rm -f >/dev/null 2>&1 || true
    "$bin/ecrl" service delete bench --force -q >/dev/null 2>&1 || true
    "$bin/ecrl" daemon stop -q >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
now() { date +%s.%N; }
running() { # the service's runningCount, read without jq: jq costs ~23 ms of CPU a call,
    # and 20 polls a second of it took ~0.5 CPU-s of the 2 cores from the engine being timed
    [[ $("$bin/ecrl" service describe bench --output json) =~ \"runningCount\":\ ([0-9]+) ]] &&
        echo "${BASH_REMATCH[1]}"
}

mkdir "$dir/ctx"
cp /bin/busybox "$dir/ctx/"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n' >"$dir/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$dir/ctx" >/dev/null
"$bin/ecrl" daemon start -q >/dev/null
"$bin/ecrl" repo push "docker://$image" busybox:1 -q >/dev/null
echo '{"family":"bench","containerDefinitions":[{"name":"web","image":"busybox:1","memory":32,"stopTimeout":2,"portMappings":[{"containerPort":8080,"hostPort":0}],"command":["httpd","-f","-p","8080"]}]}' |
    "$bin/ecrl" task register -f - -q >/dev/null
# Warm up: the engine pulls the image from ecrl once.
echo '{"family":"warm","containerDefinitions":[{"name":"a","image":"busybox:1","memory":32,"command":["true"]}]}' |
    "$bin/ecrl" task register -f - -q >/dev/null
"$bin/ecrl" task run warm --wait -q >/dev/null

ecrl_times=() docker_times=() replaced=()
for round in $(seq 1 "$rounds"); do
    start=$(now)
    "$bin/ecrl" service create bench --task-definition bench --desired-count 10 -q >/dev/null
    until [ "$(running)" = 10 ]; do sleep 0.05; done
    ecrl_times+=("$(echo "$(now) - $start" | bc)")
    # One replica's container dies; the service has 10 again.
    victim=$("$bin/ecrl" task ps --service bench --status RUNNING --output json |
        jq -r '.tasks[0].containers[0].runtimeId')
    start=$(now)
    docker kill "$victim" >/dev/null
    until [ "$(running)" != 10 ]; do sleep 0.02; done
    until [ "$(running)" = 10 ]; do sleep 0.02; done
    replaced+=("$(echo "$(now) - $start" | bc)")
    "$bin/ecrl" service delete bench --force -q >/dev/null
    while "$bin/ecrl" service describe bench -q >/dev/null 2>&1; do sleep 0.1; done

    start=$(now)
    for i in $(seq 0 9); do
        docker run -d --label ecrl-bench=1 --memory 32m -p 8080 "$image" httpd -f -p 8080 >/dev/null
    done
    docker_times+=("$(echo "$(now) - $start" | bc)")
    docker ps -aq --filter label=ecrl-bench=1 | xargs -r docker rm -f >/dev/null
    echo "round $round: service ${ecrl_times[-1]} s, docker run -d x10 ${docker_times[-1]} s, replaced in ${replaced[-1]} s" >&2
done
python3 - "$(git rev-parse --short HEAD)" "$rounds" "${ecrl_times[@]}" "${docker_times[@]}" "${replaced[@]}" <<'PY'
import statistics, sys
commit, n = sys.argv[1], int(sys.argv[2])
v = [float(x) for x in sys.argv[3:]]
e, d, r = v[:n], v[n:2 * n], v[2 * n:]
me, md, mr = statistics.median(e), statistics.median(d), statistics.median(r)
print(f"ecrl {commit}, release build, medians of {n} rounds\n")
print("| | seconds (median) | rounds |")
print("|---|---|---|")
print(f"| service of 10 to runningCount 10 | {me:.2f} | {', '.join(f'{x:.2f}' for x in e)} |")
print(f"| 10 x `docker run -d` one after another | {md:.2f} | {', '.join(f'{x:.2f}' for x in d)} |")
print(f"| killed replica: 10 RUNNING again | {mr:.2f} | {', '.join(f'{x:.2f}' for x in r)} |")
print(f"\nservice / docker: {me / md:.2f} (target <= 0.7); replaced in {mr:.2f} s (target <= 2)")
PY
