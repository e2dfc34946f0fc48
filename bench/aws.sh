#!/usr/bin/env bash
# The AWS API's cost against the registry's (issue 21), on one fresh ecrld (release build,
# credentials required, plain HTTP on loopback), side by side in one run:
#  (a) manifest GET, authenticated (Basic with an access key, as docker after login), and
#  (b) DescribeRepositories signed with SigV4 by the same key (10 repositories),
# each at 64 connections for DURATION seconds (regload, as bench/registry.sh uses it), b
# following a. Target: b's request rate ≥ 50 % of a's. The signed request is made once by
# botocore (the AWS CLI's core) and replayed: SigV4 carries no nonce, and a signature holds
# for 15 minutes, so each replay is verified in full.
# Usage: bench/aws.sh [RUNS]   (REPOS=N lists N repositories instead of 10; needs python3 with boto3: ECRL_TEST_AWS_VENV names a venv
#   with it, as tests/run makes; ECRL_BENCH_BUILD=0 measures target/release as it is;
#   ECRL_BENCH_PERF=1 records ecrld with perf during each DescribeRepositories phase)
# Results: a markdown table on stdout, raw figures in /tmp/ecrl-bench/aws.json.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3} duration=${DURATION:-10} conns=${CONNS:-64} repos=${REPOS:-10}
out=/tmp/ecrl-bench
mkdir -p "$out"
log() { echo "[aws] $*" >&2; }
venv=${ECRL_TEST_AWS_VENV:-/var/tmp/ecrl-aws-venv}
"$venv/bin/python" -c 'import botocore' 2>/dev/null ||
    { log "no botocore in $venv: python3 -m venv $venv && $venv/bin/pip install boto3"; exit 1; }
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
one_ecrld_bench aws
env_=(-u DBUS_SESSION_BUS_ADDRESS "ECRL_LOG=warn" "ECRL_DATA_DIR=$work/data"
    "ECRL_SOCKET=$work/ecrl.sock" "ECRL_REGISTRY_ADDR=127.0.0.1:$port"
    "XDG_CONFIG_HOME=$work/config" "HOME=$work")
ecrl() { env "${env_[@]}" "$bin/ecrl" "$@"; }
env "${env_[@]}" "$bin/ecrld" --anonymous none >"$work/ecrld.log" 2>&1 &
ecrld_pid=$!
for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 401 ] && break
    sleep 0.05
done

# The read cache prepares its reserve right after start (a thread reading at idle priority):
# measure once it is done, as on a daemon that has been running.
for _ in $(seq 1 240); do
    ecrl --output json daemon status 2>/dev/null | jq -e '.readCache == null or
        .readCache.preparedBytes + .readCache.heldBytes >= .readCache.budgetBytes' \
        >/dev/null 2>&1 && break
    sleep 0.5
done
ecrl auth user create bench --output json >"$work/user.json"
echo '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:*","Resource":"*"}]}' \
    >"$work/all.json"
ecrl auth policy attach bench "$work/all.json" >/dev/null
key=$(jq -r .AccessKey.AccessKeyId "$work/user.json")
secret=$(jq -r .AccessKey.SecretAccessKey "$work/user.json")
for i in $(seq 0 $((repos - 1))); do ecrl repo create "bench/r$i" >/dev/null; done
# One image to GET: a config and a manifest, pushed with the key.
base="http://127.0.0.1:$port/v2/bench/r0"
config='{"architecture":"amd64","os":"linux"}'
cdigest=sha256:$(printf %s "$config" | sha256sum | cut -d' ' -f1)
curl -sf -u "$key:$secret" -X POST --data-binary "$config" \
    "$base/blobs/uploads/?digest=$cdigest" -o /dev/null
manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}' \
    "$cdigest" "${#config}")
curl -sf -u "$key:$secret" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "$manifest" "$base/manifests/1" -o /dev/null
basic="Authorization: Basic $(printf '%s:%s' "$key" "$secret" | base64 -w0)"

# DescribeRepositories, signed by botocore: its headers, one per line.
"$venv/bin/python" - "$port" "$key" "$secret" >"$work/signed" <<'PY'
import sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
port, key, secret = sys.argv[1:]
request = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/", data=b"", headers={
    "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
    "Content-Type": "application/x-amz-json-1.1"})
SigV4Auth(Credentials(key, secret), "ecr", "us-east-1").add_auth(request)
for name, value in request.headers.items():
    print(f"{name}: {value}")
PY
signed_args=()
while IFS= read -r line; do signed_args+=(--header "$line"); done <"$work/signed"
# Both answer as they should before anything is timed.
got=$(curl -s -X POST "http://127.0.0.1:$port/" "${signed_args[@]//--header/-H}" -d '' |
    jq '.repositories | length')
[ "$got" = "$repos" ] || { log "DescribeRepositories answered $got repositories, not $repos"; exit 1; }
curl -sf -H "$basic" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$base/manifests/1" -o /dev/null

load() { # name, regload arguments...: prints "rate p99_ms" and checks every answer was 200
    local name=$1 result
    shift
    result=$("$loader" load --url "http://127.0.0.1:$port" --concurrency "$conns" \
        --duration "$duration" --warmup 1 --threads 2 "$@")
    jq -e '(.status | keys) == ["200"] and .io_errors == 0' <<<"$result" >/dev/null ||
        { log "$name: not every answer was 200: $result"; exit 1; }
    jq -r '"\(.rps) \(.latency.p99_us / 1000)"' <<<"$result"
}
declare -a get=() describe=()
for round in $(seq 1 "$runs"); do
    g=$(load "manifest GET" --path /v2/bench/r0/manifests/1 --header "$basic" \
        --header 'Accept: application/vnd.oci.image.manifest.v1+json')
    perf_pid=''
    if [ -n "${ECRL_BENCH_PERF:-}" ]; then
        perf record -q -g -p "$ecrld_pid" -o "$out/perf-aws-$round.data" 2>/dev/null &
        perf_pid=$!
    fi
    d=$(load DescribeRepositories --method POST --path / "${signed_args[@]}")
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    get+=("$g") describe+=("$d")
    log "round $round: manifest GET ${g% *}/s, DescribeRepositories ${d% *}/s (p99 ${g#* } / ${d#* } ms)"
done
python3 - "$runs" "$conns" "$(git rev-parse --short HEAD)" "$repos" "${get[@]}" "${describe[@]}" <<'PY'
import json, statistics, sys
runs, conns, commit, repos = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
pairs = [tuple(map(float, p.split())) for p in sys.argv[5:]]
get, describe = pairs[:runs], pairs[runs:]
mg = statistics.median(r for r, _ in get)
md = statistics.median(r for r, _ in describe)
json.dump({"commit": commit, "connections": conns, "manifest_get": get,
           "describe_repositories": describe}, open("/tmp/ecrl-bench/aws.json", "w"))
print(f"ecrl {commit}, {conns} connections, medians of {runs} runs\n")
print("| requests | req/s (median) | runs req/s | p99 ms |")
print("|---|---|---|---|")
print(f"| manifest GET (Basic, access key) | {mg:.0f} | {', '.join(f'{r:.0f}' for r, _ in get)} | {', '.join(f'{p:.1f}' for _, p in get)} |")
print(f"| DescribeRepositories (SigV4, {repos} repositories) | {md:.0f} | {', '.join(f'{r:.0f}' for r, _ in describe)} | {', '.join(f'{p:.1f}' for _, p in describe)} |")
print(f"\nDescribeRepositories / manifest GET: {md / mg:.2f} (target ≥ 0.50)")
PY
