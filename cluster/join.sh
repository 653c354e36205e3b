#!/usr/bin/env bash
# Add this machine to a Ray cluster whose head cluster/up.sh started (with ALLNC_HOST set to the
# head's address): one more Ray node, which runs Train workers and nothing else.
#
#   scp head:.cluster/ray_auth_token .cluster/ray_auth_token    # the head's token, mode 600
#   ALLNC_HEAD=10.0.0.1:6379 ALLNC_HOST=10.0.0.2 cluster/join.sh
#   cluster/down.sh                                              # stop this node (same ALLNC_CLUSTER_DIR)
#
# Settings (environment variables):
#   ALLNC_HEAD                 the head's GCS address, host:port (required)
#   ALLNC_HOST                 this node's address on the cluster network (required); Ray binds it
#   ALLNC_CLUSTER_DIR          this node's state folder: node.sid, logs, the token (default $PWD/.cluster)
#   RAY_AUTH_TOKEN_PATH        the head's token (default: ray_auth_token in the state folder)
#   ALLNC_NUM_CPUS, ALLNC_NUM_GPUS, ALLNC_OBJECT_STORE_BYTES, ALLNC_RESOURCES (JSON: custom resources)
#                              passed to `ray start` when set
#   ALLNC_NODE_MANAGER_PORT, ALLNC_OBJECT_MANAGER_PORT, ALLNC_RUNTIME_ENV_AGENT_PORT,
#   ALLNC_DASHBOARD_AGENT_PORT, ALLNC_DASHBOARD_AGENT_GRPC_PORT, ALLNC_METRICS_PORT
#                              fixed ports instead of Ray's (for a firewall; two nodes on one machine
#                              need different ones)
#   RAY_TMPDIR, ALLNC_PYTHON_BIN   as for up.sh
set -euo pipefail

# shellcheck source=cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
find_tools join.sh

[[ -n ${ALLNC_HEAD:-} ]] || die "set ALLNC_HEAD to the head's GCS address (host:port, RAY_ADDRESS in its env.sh)"
[[ -n ${ALLNC_HOST:-} ]] || die "set ALLNC_HOST to this node's address on the cluster network"
HOST=$ALLNC_HOST
STATE=${ALLNC_CLUSTER_DIR:-$PWD/.cluster}
mkdir -p "$STATE/logs"
STATE=$(cd "$STATE" && pwd)
export RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$STATE/ray_auth_token}
[[ -s $RAY_AUTH_TOKEN_PATH ]] || die "no Ray token at $RAY_AUTH_TOKEN_PATH; copy the head's ray_auth_token there"
ray_environment

if [[ -s $STATE/node.sid ]] && [[ -n $(session_pids "$(<"$STATE/node.sid")" raylet) ]]; then
    echo "Ray node already running (session $(<"$STATE/node.sid"), $HOST, head $ALLNC_HEAD)."
    exit 0
fi
rm -f "$STATE/node.sid"
choose_ray_temp
args=(start --address "$ALLNC_HEAD" --node-ip-address "$HOST" --temp-dir "$RAY_TEMP" --disable-usage-stats)
add() { if [[ -n ${2:-} ]]; then args+=("$1" "$2"); fi; }
add --num-cpus "${ALLNC_NUM_CPUS:-}"
add --num-gpus "${ALLNC_NUM_GPUS:-}"
add --object-store-memory "${ALLNC_OBJECT_STORE_BYTES:-}"
add --resources "${ALLNC_RESOURCES:-}"
add --node-manager-port "${ALLNC_NODE_MANAGER_PORT:-}"
add --object-manager-port "${ALLNC_OBJECT_MANAGER_PORT:-}"
add --runtime-env-agent-port "${ALLNC_RUNTIME_ENV_AGENT_PORT:-}"
add --dashboard-agent-listen-port "${ALLNC_DASHBOARD_AGENT_PORT:-}"
add --dashboard-agent-grpc-port "${ALLNC_DASHBOARD_AGENT_GRPC_PORT:-}"
add --metrics-export-port "${ALLNC_METRICS_PORT:-}"

LOG=$STATE/logs/ray-join.log
echo "Starting a Ray node on $HOST (head $ALLNC_HEAD, temp dir $RAY_TEMP)..."
# In a session of its own, which cluster/down.sh stops (as for the head).
if ! setsid -w sh -c 'echo $$ >"$0"; exec "$@"' "$STATE/node.sid" "$BIN/ray" "${args[@]}" \
        >>"$LOG" 2>&1 </dev/null; then
    tail -n 20 "$LOG" >&2 || true
    die "ray start failed; see $LOG (Ray's own logs: $RAY_TEMP/session_latest/logs)"
fi
echo "Ray node on $HOST joined $ALLNC_HEAD. Stop it with cluster/down.sh (same ALLNC_CLUSTER_DIR)."
