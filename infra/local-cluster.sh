#!/usr/bin/env bash
# Try the cluster path on one machine: a Ray head on 127.0.0.1 and an S3 API server (moto) on
# 127.0.0.1 with a bucket "actstore", then print the commands that submit an extraction to it.
# Everything binds to loopback only; run it from any shell, the venv need not be activated.
#
#   infra/local-cluster.sh          start both and print the commands (run them as printed)
#   infra/local-cluster.sh stop     stop both (only what this script started)
#
# Settings (environment): CONFIG (default jobs/configs/demo.yaml), STORE_URL (s3://actstore/demo),
# RAY_PORT (6379), DASHBOARD_PORT (8265), S3_PORT (9000), STATE (/tmp/actstore-local-cluster),
# RAY_START_ARGS (more `ray start` options, e.g. other ports).
#
# Why the head gets the venv on its PATH: a job's `python` is looked up on the head's PATH, so
# without it a job runs the system Python and fails with "No module named 'actstore'".
# Why the S3 settings go in --runtime-env-json: a job does not see the submitting shell's
# environment; it sees the cluster's, plus the runtime env's env_vars.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
BIN=$REPO/.venv/bin
STATE=${STATE:-/tmp/actstore-local-cluster}
CONFIG=${CONFIG:-jobs/configs/demo.yaml}
STORE_URL=${STORE_URL:-s3://actstore/demo}
RAY_PORT=${RAY_PORT:-6379} DASHBOARD_PORT=${DASHBOARD_PORT:-8265} S3_PORT=${S3_PORT:-9000}
mkdir -p "$STATE"

stop_group() {  # the process group started under $STATE/$1.pid, and nothing else
  if [ -f "$STATE/$1.pid" ]; then
    local group
    group=$(cat "$STATE/$1.pid")
    kill -TERM -- "-$group" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 -- "-$group" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$group" 2>/dev/null || true
    rm -f "$STATE/$1.pid"
  fi
}

if [ "${1:-start}" = stop ]; then
  stop_group ray
  stop_group moto
  echo "stopped"
  exit 0
fi
[ -x "$BIN/ray" ] || { echo "no $BIN/ray: run 'make install' first" >&2; exit 1; }

export RAY_AUTH_MODE=disabled AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
ENDPOINT=http://127.0.0.1:$S3_PORT
setsid "$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/moto.log" 2>&1 &
echo $! >"$STATE/moto.pid"
for _ in $(seq 100); do curl -sf "$ENDPOINT/moto-api/" >/dev/null && break; sleep 0.2; done
"$BIN/python" -c "import s3fs, sys; s3fs.S3FileSystem(endpoint_url=sys.argv[1]).mkdir('actstore')" "$ENDPOINT"

# --block in its own session: `stop` ends exactly this head (`ray stop` would end every Ray on the machine)
# shellcheck disable=SC2086
PATH="$BIN:$PATH" setsid "$BIN/ray" start --head --block --node-ip-address=127.0.0.1 --port="$RAY_PORT" \
  --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --num-cpus="$(nproc)" ${RAY_START_ARGS:-} \
  >"$STATE/ray.log" 2>&1 &
echo $! >"$STATE/ray.pid"
DASHBOARD=http://127.0.0.1:$DASHBOARD_PORT
# ready when the job agent answers: submitting earlier fails with "No available agent"
for _ in $(seq 300); do
  RAY_API_SERVER_ADDRESS=$DASHBOARD "$BIN/ray" job list >/dev/null 2>&1 && break
  kill -0 "$(cat "$STATE/ray.pid")" 2>/dev/null || { cat "$STATE/ray.log" >&2; exit 1; }
  sleep 0.5
done
printf '{"env_vars": {"AWS_ENDPOINT_URL": "%s", "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}}\n' \
  "$ENDPOINT" >"$STATE/runtime-env.json"

cat <<EOT

Local cluster up: Ray dashboard $DASHBOARD, S3 API $ENDPOINT (bucket "actstore").
Submit the extraction of $CONFIG to $STORE_URL, in any shell:
  cd $REPO
  export RAY_API_SERVER_ADDRESS=$DASHBOARD RAY_AUTH_MODE=disabled
  export AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
  CONFIG=$CONFIG STORE_URL=$STORE_URL RUNTIME_ENV=\$(cat $STATE/runtime-env.json)
  RUN=\$(.venv/bin/actstore run-id "\$CONFIG" --store "\$STORE_URL")
  .venv/bin/ray job submit --submission-id "\$RUN" --working-dir . --runtime-env-json "\$RUNTIME_ENV" -- python jobs/extract.py "\$CONFIG" --store "\$STORE_URL"
  .venv/bin/actstore info "\$STORE_URL"

The exports serve this shell (actstore info); the job gets the S3 settings from its runtime env.
After a failure, the submission id stays taken: '.venv/bin/ray job delete "\$RUN"', then submit again.
Stop with: infra/local-cluster.sh stop
EOT
