#!/usr/bin/env bash
# The shared registry benchmark (../shared/bench/bench.py) against ecrld, on its defaults
# (blobs encrypted at rest) and with `--encryption none`, and against CNCF distribution
# (Debian's docker-registry), one after the other in one session, then the side-by-side table.
#
# Usage: bench/registry.sh [RUNS] [TARGETS]   TARGETS: any of ecrl,plain,distribution,before
# (default the first three). `before` is another build of ecrld on its defaults, at
# $ECRLD_BEFORE (e.g. a release build of the previous commit in a git worktree), to measure
# a change side by side in one session. Each target gets a fresh data dir. Results:
# /tmp/ecrl-bench/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
targets=${2:-ecrl,plain,distribution}
bench=${BENCH_PY:-../shared/bench/bench.py}
out=/tmp/ecrl-bench
mkdir -p "$out"
# ECRL_BENCH_BUILD=0 measures target/release as it is (built before, from the same commit);
# ECRL_BENCH_SKIP=small,load runs only the big-blob phases (pushes and pulls).
if [ "${ECRL_BENCH_BUILD:-1}" != 0 ]; then
    cargo build --release --locked --bins >&2
fi
loader=/tmp/regload/release/regload
if [ ! -x "$loader" ]; then
    cargo build --release --manifest-path "$(dirname "$bench")/regload/Cargo.toml" \
        --target-dir /tmp/regload >&2
fi
work=$(mktemp -d /tmp/ecrl-registry-bench.XXXXXX)
pid=
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; pid=; }
# The big blobs of a target that is done (a few files, gigabytes) go at once, the many small
# files only at the end: see run_ecrld.
free_space() { find "$work" -type f -size +1M -delete; }
trap 'stop; rm -rf "$work"' EXIT

wait_port() {
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$1/v2/" && return
        sleep 0.05
    done
    echo "registry on port $1 did not start" >&2
    exit 1
}

measure() { # name, port: the bench against the registry just started as $pid, then stop it
    wait_port "$2"
    python3 "$bench" run "http://127.0.0.1:$2" --pid "$pid" --runs "$runs" \
        --loader "$loader" --out "$out/$1.json" ${ECRL_BENCH_SKIP:+--skip "$ECRL_BENCH_SKIP"}
    stop
    free_space
}

run_ecrld() { # name, extra ecrld args...
    local name=$1
    shift
    local ecrld=target/release/ecrld
    if [ "$name" = before ]; then
        ecrld=${ECRLD_BEFORE:?set ECRLD_BEFORE to the ecrld to compare with}
    fi
    # Data dirs are removed only at the end: on this ext4 (no journal) creating files is
    # slower for minutes after mass deletes, which would handicap the next target.
    ECRL_LOG=warn XDG_CONFIG_HOME="$work/config" "$ecrld" --data-dir "$work/$name" \
        --socket "$work/s.sock" --registry-addr 127.0.0.1:5070 --anonymous all "$@" \
        >"$work/$name.log" 2>&1 &
    pid=$!
    measure "$name" 5070
}

run_distribution() {
    cat >"$work/reg.yml" <<YML
version: 0.1
log: { level: error }
storage:
  filesystem: { rootdirectory: $work/reg-data }
  delete: { enabled: true }
http: { addr: 127.0.0.1:5071 }
YML
    docker-registry serve "$work/reg.yml" >"$work/distribution.log" 2>&1 &
    pid=$!
    measure distribution 5071
}

# The disk's own sequential O_DIRECT speeds, 1 GiB each way, before each target: on these
# shared VMs they move from minute to minute, and bound push and first pull.
disk() {
    local w r
    w=$(dd if=/dev/zero of="$work/dd" bs=4M count=256 oflag=direct conv=fsync 2>&1 | tail -1)
    r=$(dd if="$work/dd" of=/dev/null bs=4M iflag=direct 2>&1 | tail -1)
    rm -f "$work/dd"
    echo "disk before $1: O_DIRECT write ${w##*, }, read ${r##*, }" | tee -a "$out/disk.txt" >&2
}
: >"$out/disk.txt"

files=()
for t in ${targets//,/ }; do
    disk "$t"
    case $t in
    ecrl) run_ecrld ecrl ;;
    before) run_ecrld before ;;
    plain) run_ecrld plain --encryption none ;;
    distribution) run_distribution ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    files+=("$out/$t.json")
done
python3 bench/side_by_side.py "${files[@]}"
cat "$out/disk.txt"
