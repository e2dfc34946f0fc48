#!/usr/bin/env bash
# What authentication costs: manifest GETs at 64 connections (wrk, 2 threads) against one
# ecrld in one run — anonymous (--anonymous pull), with the owner's login token (Basic AWS:
# token), with a user's access key whose identity policy allows the pull (so every request
# is decided by the policy evaluation), and with a bearer token from the token endpoint.
# Usage: bench/auth.sh [SECONDS]   (installs wrk with apt-get when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build --release --locked --bins >&2
bin=$PWD/target/release
dir=$(mktemp -d)
export ECRL_DATA_DIR=$dir/data ECRL_SOCKET=$dir/ecrl.sock ECRL_REGISTRY_ADDR=127.0.0.1:0 HOME=$dir
trap '"$bin/ecrl" daemon stop -q >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$bin/ecrl" daemon start -q --anonymous pull >/dev/null
addr=$("$bin/ecrl" daemon status --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["registryAddress"])')
token=$("$bin/ecrl" get-login-password)
owner="Basic $(printf 'AWS:%s' "$token" | base64 -w0)"

# One small image to GET.
python3 - "$addr" "$owner" <<'PY'
import hashlib, json, sys, urllib.request
addr, auth = sys.argv[1], sys.argv[2]
config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
digest = "sha256:" + hashlib.sha256(config).hexdigest()
def call(method, path, body=None, headers={}):
    r = urllib.request.Request(f"http://{addr}{path}", data=body, method=method,
                               headers={"Authorization": auth, **headers})
    return urllib.request.urlopen(r).status
call("POST", f"/v2/bench/app/blobs/uploads/?digest={digest}", config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
    "layers": []}).encode()
call("PUT", "/v2/bench/app/manifests/1", manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
PY

# A user whose identity policy allows pulls.
user=$("$bin/ecrl" auth user create bench --output json)
key=$(echo "$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKey"]["AccessKeyId"])')
secret=$(echo "$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKey"]["SecretAccessKey"])')
cat >"$dir/pull.json" <<'JSON'
{"Version": "2012-10-17", "Statement": [{"Sid": "Pull", "Effect": "Allow",
  "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
  "Resource": "arn:aws:ecr:*:*:repository/bench/*"}]}
JSON
"$bin/ecrl" auth policy attach bench "$dir/pull.json" -q >/dev/null
userauth="Basic $(printf '%s:%s' "$key" "$secret" | base64 -w0)"
bearer="Bearer $(curl -s -H "Authorization: $userauth" "http://$addr/v2/token?service=ecrl&scope=repository:bench/app:pull" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

url="http://$addr/v2/bench/app/manifests/1"
accept="Accept: application/vnd.oci.image.manifest.v1+json"
run() {
    local name=$1; shift
    # Every request must succeed: wrk counts non-2xx answers separately.
    local out
    out=$(wrk -t2 -c64 -d"${secs}s" --latency -H "$accept" "$@" "$url")
    if echo "$out" | grep -q "Non-2xx"; then
        echo "$name: some requests failed:" >&2; echo "$out" >&2; exit 1
    fi
    local rps p99
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    printf '%-34s %10s req/s   p99 %s\n' "$name" "$rps" "$p99"
    echo "$rps" >"$dir/$name.rps"
}
run anonymous
run owner-token -H "Authorization: $owner"
run user-access-key+policy -H "Authorization: $userauth"
run user-bearer+policy -H "Authorization: $bearer"
python3 - "$dir" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
anon = float((d / "anonymous.rps").read_text())
for name in ["owner-token", "user-access-key+policy", "user-bearer+policy"]:
    r = float((d / f"{name}.rps").read_text())
    print(f"{name}: {r / anon * 100:.0f}% of the anonymous rate (target >= 90%)")
PY
