#!/usr/bin/env bash
# Prometheus metrics (issue 23): what a scrape every second costs the registry. One ecrld
# (release build, no authentication, metrics on), one image; regload GETs its manifest by tag
# at CONNS connections for DURATION s, in rounds alternating between no scrapes and a scrape
# of /metrics every second (curl, as Prometheus would, the whole text each time). Target:
# the rate with scrapes ≥ 97 % of the rate without.
# Usage: bench/metrics.sh [RUNS]   (DURATION, CONNS; ECRL_BENCH_BUILD=0 measures
#   target/release as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3} duration=${DURATION:-10} conns=${CONNS:-64}
out=/tmp/ecrl-bench
mkdir -p "$out"
log() { echo "[metrics] $*" >&2; }
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
one_ecrld_bench metrics
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metrics_port=$(free_port)
scraper=''
trap 'stop scraper; stop ecrld_pid; rm -rf "$work"' EXIT
env -u DBUS_SESSION_BUS_ADDRESS ECRL_LOG=warn "ECRL_DATA_DIR=$work/data" \
    "ECRL_SOCKET=$work/ecrl.sock" "ECRL_REGISTRY_ADDR=127.0.0.1:$port" \
    "XDG_CONFIG_HOME=$work/config" "HOME=$work" \
    "$bin/ecrld" --anonymous all --metrics-addr "127.0.0.1:$metrics_port" >"$work/ecrld.log" 2>&1 &
ecrld_pid=$!
wait_up "$port" "$ecrld_pid" "$work/ecrld.log"

config='{"architecture":"amd64","os":"linux"}'
cdigest=sha256:$(printf %s "$config" | sha256sum | cut -d' ' -f1)
manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}' \
    "$cdigest" "${#config}")
base="http://127.0.0.1:$port/v2/bench/app"
curl -sf -X POST --data-binary "$config" "$base/blobs/uploads/?digest=$cdigest" -o /dev/null
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "$manifest" "$base/manifests/1" -o /dev/null
scrape_bytes=$(curl -sf "http://127.0.0.1:$metrics_port/metrics" | wc -c)
log "ecrld on :$port, metrics on :$metrics_port ($scrape_bytes bytes a scrape)"

load() { # prints the rate, checks every answer was 200
    local r
    r=$(manifest_load "$port" "$conns" "$duration")
    echo "${r% *}"
}
declare -a quiet=() scraped=()
for round in $(seq 1 "$runs"); do
    q=$(load)
    (while :; do curl -sf -o /dev/null "http://127.0.0.1:$metrics_port/metrics"; sleep 1; done) &
    scraper=$!
    s=$(load)
    stop scraper
    quiet+=("$q") scraped+=("$s")
    log "round $round: manifest GET ${q}/s without scrapes, ${s}/s with one a second"
done
python3 - "$runs" "$conns" "$(git rev-parse --short HEAD)" "$scrape_bytes" "${quiet[@]}" "${scraped[@]}" <<'PY'
import json, statistics, sys
runs, conns, commit, size = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
quiet = [float(v) for v in sys.argv[5:5 + runs]]
scraped = [float(v) for v in sys.argv[5 + runs:]]
mq, ms = statistics.median(quiet), statistics.median(scraped)
json.dump({"commit": commit, "connections": conns, "quiet": quiet, "scraped": scraped},
          open("/tmp/ecrl-bench/metrics.json", "w"))
print(f"ecrl {commit}, {conns} connections, medians of {runs} rounds, {size} bytes a scrape\n")
print("| manifest GET | req/s (median) | rounds |")
print("|---|---|---|")
print(f"| no scrapes | {mq:.0f} | {', '.join(f'{v:.0f}' for v in quiet)} |")
print(f"| a scrape every second | {ms:.0f} | {', '.join(f'{v:.0f}' for v in scraped)} |")
print(f"\nwith / without: {ms / mq:.3f} (target ≥ 0.97)")
PY
