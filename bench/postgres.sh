#!/usr/bin/env bash
# Metadata on PostgreSQL against the SQLite default (issue 22), side by side in one run: two
# fresh ecrld (release build, plain HTTP on loopback, no authentication), one on SQLite in its
# data dir, one on a PostgreSQL 15 this script starts on a temp dir (fsync on, as in use).
# Each holds the same image; regload GETs its manifest by tag at 64 connections for
# DURATION seconds, the two daemons in turn, RUNS rounds. Target: PostgreSQL's rate ≥ 50 %
# of SQLite's. Then the cost of writes: N tag moves (manifest PUTs, each a metadata
# transaction) on each, one at a time, as CI pushes do.
# Usage: bench/postgres.sh [RUNS]   (ECRL_BENCH_BUILD=0 measures target/release as it is)
# Results: a markdown table on stdout, raw figures in /tmp/ecrl-bench/postgres.json.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3} duration=${DURATION:-10} conns=${CONNS:-64} puts=${PUTS:-500}
out=/tmp/ecrl-bench
mkdir -p "$out"
log() { echo "[postgres] $*" >&2; }
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
one_ecrld_bench postgres
pg_bin=/usr/lib/postgresql/15/bin
as_postgres() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$work"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_postgres "$pg_bin/initdb -D $work/pg -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >/dev/null
as_postgres "$pg_bin/pg_ctl -D $work/pg -l $work/pg.log -w -o '-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work' start" >/dev/null
sqlite_pid='' pg_pid=''
trap 'stop sqlite_pid; stop pg_pid; as_postgres "$pg_bin/pg_ctl -D $work/pg -m fast stop" >/dev/null 2>&1; rm -rf "$work"' EXIT
psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -c 'CREATE DATABASE ecrl' postgres

start() { # name port [ecrld args...]: starts one ecrld, waits for it, prints its pid
    local name=$1 p=$2
    shift 2
    mkdir -p "$work/$name"
    env -u DBUS_SESSION_BUS_ADDRESS ECRL_LOG=warn "ECRL_DATA_DIR=$work/$name/data" \
        "ECRL_SOCKET=$work/$name/ecrl.sock" "ECRL_REGISTRY_ADDR=127.0.0.1:$p" \
        "XDG_CONFIG_HOME=$work/config" "HOME=$work" ECRL_READ_CACHE=64MiB \
        "$bin/ecrld" --anonymous all "$@" >"$work/$name.log" 2>&1 &
    echo $!
    for _ in $(seq 1 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/v2/")" = 200 ] && return
        sleep 0.05
    done
    log "$name did not start: $(cat "$work/$name.log")"
    exit 1
}
sqlite_port=$port
pg_reg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sqlite_pid=$(start sqlite "$sqlite_port")
pg_pid=$(start pg "$pg_reg_port" --metadata-backend postgres \
    --postgres-url "postgres://postgres@127.0.0.1:$pg_port/ecrl")

config='{"architecture":"amd64","os":"linux"}'
cdigest=sha256:$(printf %s "$config" | sha256sum | cut -d' ' -f1)
manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}' \
    "$cdigest" "${#config}")
for p in "$sqlite_port" "$pg_reg_port"; do
    base="http://127.0.0.1:$p/v2/bench/app"
    curl -sf -X POST --data-binary "$config" "$base/blobs/uploads/?digest=$cdigest" -o /dev/null
    curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "$manifest" "$base/manifests/1" -o /dev/null
    curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$base/manifests/1" -o /dev/null
done

load() { # port: prints "rate p99_ms" and checks every answer was 200
    manifest_load "$1" "$conns" "$duration"
}
puts_per_s() { # port: tag moves (manifest PUTs of new tags) one at a time, per second
    python3 - "$1" "$puts" "$manifest" <<'PY'
import http.client, sys, time
port, n, manifest = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
c = http.client.HTTPConnection("127.0.0.1", port)
start = time.monotonic()
run = time.time_ns()
for i in range(n):
    c.request("PUT", f"/v2/bench/app/manifests/t{run}-{i}", manifest,
              {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
print(f"{n / (time.monotonic() - start):.0f}")
PY
}
declare -a s_get=() p_get=() s_put=() p_put=()
for round in $(seq 1 "$runs"); do
    s=$(load "$sqlite_port")
    p=$(load "$pg_reg_port")
    sp=$(puts_per_s "$sqlite_port")
    pp=$(puts_per_s "$pg_reg_port")
    s_get+=("$s") p_get+=("$p") s_put+=("$sp") p_put+=("$pp")
    log "round $round: manifest GET SQLite ${s% *}/s, PostgreSQL ${p% *}/s; tag PUTs $sp/s, $pp/s"
done
python3 - "$runs" "$conns" "$(git rev-parse --short HEAD)" "${s_get[@]}" "${p_get[@]}" "${s_put[@]}" "${p_put[@]}" <<'PY'
import json, statistics, sys
runs, conns, commit = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
vals = sys.argv[4:]
s_get = [tuple(map(float, v.split())) for v in vals[:runs]]
p_get = [tuple(map(float, v.split())) for v in vals[runs:2 * runs]]
s_put = [float(v) for v in vals[2 * runs:3 * runs]]
p_put = [float(v) for v in vals[3 * runs:]]
ms, mp = statistics.median(r for r, _ in s_get), statistics.median(r for r, _ in p_get)
json.dump({"commit": commit, "connections": conns, "sqlite_get": s_get, "postgres_get": p_get,
           "sqlite_put": s_put, "postgres_put": p_put}, open("/tmp/ecrl-bench/postgres.json", "w"))
print(f"ecrl {commit}, {conns} connections, medians of {runs} runs\n")
print("| metadata | manifest GET req/s (median) | runs | p99 ms | tag PUTs/s (one at a time) |")
print("|---|---|---|---|---|")
for name, get, put in (("SQLite", s_get, s_put), ("PostgreSQL", p_get, p_put)):
    print(f"| {name} | {statistics.median(r for r, _ in get):.0f} | "
          f"{', '.join(f'{r:.0f}' for r, _ in get)} | {', '.join(f'{p:.1f}' for _, p in get)} | "
          f"{statistics.median(put):.0f} ({', '.join(f'{p:.0f}' for p in put)}) |")
print(f"\nmanifest GET PostgreSQL / SQLite: {mp / ms:.2f} (target ≥ 0.50)")
PY
