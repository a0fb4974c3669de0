#!/usr/bin/env bash
# Try the cluster path on one machine: a Ray head on 127.0.0.1 and an S3 API server (moto) on
# 127.0.0.1:9000 with a bucket "actstore". Prints the exports to use; `infra/local-cluster.sh stop`
# stops both. Everything binds to loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
STATE=${STATE:-/tmp/actstore-local-cluster}
mkdir -p "$STATE"

if [ "${1:-start}" = stop ]; then
  [ -f "$STATE/moto.pid" ] && kill "$(cat "$STATE/moto.pid")" 2>/dev/null || true
  "$BIN/ray" stop
  exit 0
fi

export RAY_AUTH_MODE=disabled AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
"$BIN/moto_server" -H 127.0.0.1 -p 9000 >"$STATE/moto.log" 2>&1 &
echo $! >"$STATE/moto.pid"
for _ in $(seq 50); do curl -sf http://127.0.0.1:9000/moto-api/ >/dev/null && break; sleep 0.2; done
"$BIN/python" -c "import s3fs; s3fs.S3FileSystem(endpoint_url='http://127.0.0.1:9000').mkdir('actstore')"
"$BIN/ray" start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --num-cpus="$(nproc)"
cat <<EOT

Local cluster up. In this shell:
  export RAY_AUTH_MODE=disabled RAY_API_SERVER_ADDRESS=http://127.0.0.1:8265
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
  export AWS_ENDPOINT_URL=http://127.0.0.1:9000      # botocore reads it: no endpoint in the config
  $BIN/ray job submit --submission-id \$($BIN/actstore run-id jobs/configs/demo.yaml --store s3://actstore/demo) \\
      --working-dir . -- python jobs/extract.py jobs/configs/demo.yaml --store s3://actstore/demo
Stop with: infra/local-cluster.sh stop
EOT
