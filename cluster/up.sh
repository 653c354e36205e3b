#!/usr/bin/env bash
# Start a Ray head and an MLflow tracking server, both bound to 127.0.0.1 only unless ALLNC_HOST
# names another address (the head of a multi-node cluster: other nodes join it with cluster/join.sh).
#
#   cluster/up.sh              # start (or report the copy already running)
#   source .cluster/env.sh     # point `ray job submit` and MLflow clients at it
#   cluster/down.sh            # stop what this script started
#
# Settings (environment variables, all optional):
#   ALLNC_HOST                 the address the servers bind and advertise (127.0.0.1). Another
#                              address exposes the GCS, the job server and MLflow on that network:
#                              see docs/scale.md for the ports a firewall must open.
#   ALLNC_CLUSTER_DIR          state folder: PID files, logs, env.sh, token, mlflow.db
#                              (default: $PWD/.cluster)
#   ALLNC_RAY_PORT             GCS port of the Ray head (6379)
#   ALLNC_DASHBOARD_PORT       Ray dashboard and job server (8265)
#   ALLNC_RAY_CLIENT_PORT      Ray Client server (10001)
#   ALLNC_DASHBOARD_AGENT_PORT dashboard agent HTTP port (52365)
#   ALLNC_MLFLOW_PORT          MLflow tracking server (5000)
#   ALLNC_NUM_CPUS, ALLNC_NUM_GPUS, ALLNC_OBJECT_STORE_BYTES
#                              passed to `ray start` when set
#   ALLNC_START_TIMEOUT        seconds to wait for the servers to answer (120)
#   ALLNC_PYTHON_BIN           folder holding python, ray and mlflow
#                              (default: the folder of the `python` on PATH)
#   RAY_TMPDIR                 Ray's temp/session folder. Default: $ALLNC_CLUSTER_DIR/ray, or a
#                              short folder under /tmp when that path is too long for Ray's
#                              Unix sockets.
# Other Ray ports are picked at random by Ray. Ports you set must stay out of Ray's worker port
# range (10002-19999).
set -euo pipefail

STATE=${ALLNC_CLUSTER_DIR:-$PWD/.cluster}
RAY_PORT=${ALLNC_RAY_PORT:-6379}
DASHBOARD_PORT=${ALLNC_DASHBOARD_PORT:-8265}
CLIENT_PORT=${ALLNC_RAY_CLIENT_PORT:-10001}
AGENT_PORT=${ALLNC_DASHBOARD_AGENT_PORT:-52365}
MLFLOW_PORT=${ALLNC_MLFLOW_PORT:-5000}
TIMEOUT=${ALLNC_START_TIMEOUT:-120}
HOST=${ALLNC_HOST:-127.0.0.1}

# shellcheck source=cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
find_tools up.sh mlflow

# --- state folder ----------------------------------------------------------------------------
mkdir -p "$STATE/logs" "$STATE/mlartifacts"
STATE=$(cd "$STATE" && pwd)
LOGS=$STATE/logs
TOKEN=$STATE/ray_auth_token

# The Ray head and the MLflow server start with this environment; Ray's workers, and so the
# jobs, inherit it.
ray_environment
export MLFLOW_DISABLE_TELEMETRY=true
export RAY_AUTH_TOKEN_PATH=$TOKEN

# --- liveness --------------------------------------------------------------------------------
ray_alive() {
    # The head is up while the GCS server of its session lives.
    [[ -s $STATE/ray.sid ]] && [[ -n $(session_pids "$(<"$STATE/ray.sid")" gcs_server) ]]
}
mlflow_alive() {
    [[ -s $STATE/mlflow.pid ]] || return 1
    local pid cmd
    pid=$(<"$STATE/mlflow.pid")
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmd == *mlflow* ]]
}

# probe URL [TOKEN-FILE]: succeeds when URL answers HTTP 200.
probe() {
    "$PY" - "$@" <<'PYEOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    with open(sys.argv[2]) as f:
        req.add_header("Authorization", "Bearer " + f.read().strip())
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PYEOF
}

# check_free NAME PORT...: fail early when something already listens there (else a foreign server
# on the port could answer our readiness probes).
check_free() {
    local name=$1 port
    shift
    for port in "$@"; do
        if "$PY" -c 'import socket, sys
s = socket.socket()
s.settimeout(2)
sys.exit(0 if s.connect_ex((sys.argv[2], int(sys.argv[1]))) == 0 else 1)' "$port" "$HOST"; then
            die "port $port ($name) is already in use on $HOST; pick another with the ALLNC_*_PORT variables"
        fi
    done
}

# wait_for NAME URL LOG ALIVE-FUNCTION [TOKEN-FILE]
wait_for() {
    local name=$1 url=$2 log=$3 alive=$4 deadline=$((SECONDS + TIMEOUT))
    shift 4
    until probe "$url" "$@"; do
        if ! "$alive"; then
            tail -n 20 "$log" >&2 || true
            die "$name exited during start-up; see $log"
        fi
        if (( SECONDS >= deadline )); then
            tail -n 20 "$log" >&2 || true
            die "$name did not answer $url within ${TIMEOUT}s; see $log"
        fi
        sleep 1
    done
}

# --- Ray auth token (for the head and every client) -------------------------------------------
if [[ ! -s $TOKEN ]]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$TOKEN")
fi

# --- MLflow server ---------------------------------------------------------------------------
MLFLOW_LOG=$LOGS/mlflow.log
if mlflow_alive; then
    # shellcheck source=/dev/null
    source "$STATE/mlflow.conf"
    echo "MLflow server already running (pid $(<"$STATE/mlflow.pid"), $HOST:$MLFLOW_PORT)."
else
    rm -f "$STATE/mlflow.pid"
    check_free "MLflow" "$MLFLOW_PORT"
    printf 'MLFLOW_PORT=%q\n' "$MLFLOW_PORT" >"$STATE/mlflow.conf"
    echo "Starting MLflow server on $HOST:$MLFLOW_PORT (store $STATE/mlflow.db)..."
    # In a session of its own as well, so that its worker processes go with it. Its background
    # job runner (a pool of huey consumers, used by GenAI features only) is off unless asked for.
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
    # Artifacts go through the server (--artifacts-destination, URIs mlflow-artifacts:/): a rank 0 on
    # another node cannot write to this folder itself.
    # MLflow answers only the Host headers it allows (against DNS rebinding): by default localhost
    # and private networks, which leaves out a head on another address (127.0.0.2, a public IP).
    allowed=$HOST,$HOST:$MLFLOW_PORT,localhost,localhost:$MLFLOW_PORT,127.0.0.1,127.0.0.1:$MLFLOW_PORT
    setsid sh -c 'echo $$ >"$0"; exec "$@"' "$STATE/mlflow.pid" "$BIN/mlflow" server \
        --host "$HOST" --port "$MLFLOW_PORT" --allowed-hosts "$allowed" \
        --backend-store-uri "sqlite:///$STATE/mlflow.db" \
        --artifacts-destination "$STATE/mlartifacts" --workers 1 \
        >>"$MLFLOW_LOG" 2>&1 </dev/null &
    for _ in $(seq 100); do
        if [[ -s $STATE/mlflow.pid ]]; then break; fi
        sleep 0.1
    done
    [[ -s $STATE/mlflow.pid ]] || die "MLflow server did not start; see $MLFLOW_LOG"
fi
wait_for "MLflow server" "http://$HOST:$MLFLOW_PORT/health" "$MLFLOW_LOG" mlflow_alive
# Jobs run with the Ray head's environment (not the submitting shell's): they log here.
export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT

# --- Ray head --------------------------------------------------------------------------------
RAY_LOG=$LOGS/ray-start.log
if ray_alive; then
    # Keep talking to the running copy on the ports it was started with.
    # shellcheck source=/dev/null
    source "$STATE/ray.conf"
    echo "Ray head already running (session $(<"$STATE/ray.sid"), dashboard $HOST:$DASHBOARD_PORT)."
else
    if [[ -s $STATE/ray.sid ]] && [[ -n $(session_pids "$(<"$STATE/ray.sid")" ray) ]]; then
        die "the previous Ray head of $STATE lost its GCS server but left processes; run cluster/down.sh first"
    fi
    rm -f "$STATE/ray.sid" "$STATE/ray.pids" "$STATE/ray.conf"
    check_free "Ray" "$RAY_PORT" "$DASHBOARD_PORT" "$CLIENT_PORT" "$AGENT_PORT"
    choose_ray_temp
    ray_args=(start --head --node-ip-address "$HOST" --port "$RAY_PORT"
              --dashboard-host "$HOST" --dashboard-port "$DASHBOARD_PORT" --include-dashboard true
              --ray-client-server-port "$CLIENT_PORT" --dashboard-agent-listen-port "$AGENT_PORT"
              --temp-dir "$RAY_TEMP" --disable-usage-stats)
    if [[ -n ${ALLNC_NUM_CPUS:-} ]]; then ray_args+=(--num-cpus "$ALLNC_NUM_CPUS"); fi
    if [[ -n ${ALLNC_NUM_GPUS:-} ]]; then ray_args+=(--num-gpus "$ALLNC_NUM_GPUS"); fi
    if [[ -n ${ALLNC_OBJECT_STORE_BYTES:-} ]]; then
        ray_args+=(--object-store-memory "$ALLNC_OBJECT_STORE_BYTES")
    fi
    {
        printf 'RAY_PORT=%q\n' "$RAY_PORT"
        printf 'DASHBOARD_PORT=%q\n' "$DASHBOARD_PORT"
        printf 'RAY_TEMP=%q\n' "$RAY_TEMP"
        printf 'RAY_TMPDIR_GIVEN=%q\n' "${RAY_TMPDIR:+1}"
    } >"$STATE/ray.conf"
    echo "Starting Ray head on $HOST:$RAY_PORT (dashboard $HOST:$DASHBOARD_PORT, temp dir $RAY_TEMP)..."
    # A new session holds every process of this head (GCS, raylet, dashboard, agents, workers),
    # so down.sh can stop exactly these and nothing else. The session id is the pid of `sh`,
    # which then becomes `ray start`.
    if ! setsid -w sh -c 'echo $$ >"$0"; exec "$@"' "$STATE/ray.sid" "$BIN/ray" "${ray_args[@]}" \
            >>"$RAY_LOG" 2>&1 </dev/null; then
        tail -n 20 "$RAY_LOG" >&2 || true
        die "ray start failed; see $RAY_LOG (Ray's own logs: $RAY_TEMP/session_latest/logs)"
    fi
    # The head's processes as they are now (workers come and go; down.sh stops the session).
    session_pids "$(<"$STATE/ray.sid")" "" >"$STATE/ray.pids"
fi
wait_for "Ray job server" "http://$HOST:$DASHBOARD_PORT/api/jobs/" "$RAY_LOG" ray_alive "$TOKEN"

# --- client environment ----------------------------------------------------------------------
# shellcheck source=/dev/null
source "$STATE/ray.conf"
{
    echo "# Written by cluster/up.sh. Use: source $STATE/env.sh"
    echo "# The job server (ray job ...) and the GCS (ray.init, ray status, python jobs/... run here)."
    printf 'export RAY_API_SERVER_ADDRESS=%q\n' "http://$HOST:$DASHBOARD_PORT"
    printf 'export RAY_ADDRESS=%q\n' "$HOST:$RAY_PORT"
    echo "export RAY_AUTH_MODE=token"
    printf 'export RAY_AUTH_TOKEN_PATH=%q\n' "$TOKEN"
    echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    echo "export RAY_USAGE_STATS_ENABLED=0"
    printf 'export MLFLOW_TRACKING_URI=%q\n' "http://$HOST:$MLFLOW_PORT"
    echo "export MLFLOW_DISABLE_TELEMETRY=true"
    if [[ -n $RAY_TMPDIR_GIVEN ]]; then printf 'export RAY_TMPDIR=%q\n' "$RAY_TEMP"; fi
} >"$STATE/env.sh.tmp"
mv "$STATE/env.sh.tmp" "$STATE/env.sh"

cat <<EOF

Local cluster is up (state in $STATE, logs in $LOGS).
  Ray dashboard and job server: http://$HOST:$DASHBOARD_PORT
  MLflow tracking server:       http://$HOST:$MLFLOW_PORT
Use it from this shell:
  source $STATE/env.sh
  ray job submit --working-dir . -- python jobs/digits_lt.py
Stop it with cluster/down.sh (same ALLNC_CLUSTER_DIR).
EOF
