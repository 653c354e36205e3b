#!/usr/bin/env bash
# Stop the Ray head and MLflow server that cluster/up.sh started (or the Ray node cluster/join.sh
# started), and nothing else.
#
# up.sh starts each of them as the leader of a new session; every process Ray spawns for this
# head (GCS, raylet, dashboard, agents, workers, job drivers) stays in that session, while other
# Ray instances on the machine live in sessions of their own. This script therefore signals the
# recorded sessions only; it never runs `ray stop`, which would stop every Ray on the machine.
# Running it again, or with nothing started, does nothing and exits 0.
#
# Settings: ALLNC_CLUSTER_DIR (default $PWD/.cluster), ALLNC_STOP_GRACE (seconds between SIGTERM
# and SIGKILL, default 10).
set -euo pipefail

STATE=${ALLNC_CLUSTER_DIR:-$PWD/.cluster}
GRACE=${ALLNC_STOP_GRACE:-10}

if [[ ! -d $STATE ]]; then
    echo "Nothing to stop (no $STATE)."
    exit 0
fi

# session_pids SID PATTERN [EXCLUDE]: live processes of session SID whose command line contains
# PATTERN (and not EXCLUDE).
session_pids() {
    local pid cmd
    # Zombies (state Z) are skipped: they hold no ports and wait only for their parent.
    for pid in $(ps -eo pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ {print $1}'); do
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
        if [[ $cmd == *"$2"* ]] && [[ -z ${3:-} || $cmd != *"$3"* ]]; then echo "$pid"; fi
    done
}

# signal_wait SID SIGNAL SECONDS PATTERN [EXCLUDE]: signal the matching processes of the session
# and wait up to SECONDS for them to exit.
signal_wait() {
    local sid=$1 sig=$2 secs=$3 pids deadline
    shift 3
    pids=$(session_pids "$sid" "$@")
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086
    kill "-$sig" $pids 2>/dev/null || true
    deadline=$((SECONDS + secs))
    while [[ -n $(session_pids "$sid" "$@") ]] && (( SECONDS < deadline )); do sleep 0.3; done
}

# stop_session NAME SID-FILE MARK [ORDER...]: stop every process of the recorded session,
# provided the session still looks like ours (one of its processes mentions MARK; this guards
# against a recycled id). ORDER lists command-line patterns to stop first, one after the other;
# the last pattern is stopped last, after everything else.
stop_session() {
    local name=$1 file=$2 mark=$3 sid pattern left
    shift 3
    if [[ ! -s $file ]]; then
        echo "$name: not running."
        return 0
    fi
    sid=$(<"$file")
    if [[ ! $sid =~ ^[0-9]+$ ]] || [[ -z $(session_pids "$sid" "$mark") ]]; then
        echo "$name: not running."
        rm -f "$file"
        return 0
    fi
    echo "$name: stopping session $sid ($(session_pids "$sid" "" | wc -w) processes)..."
    if (( $# >= 2 )); then
        local -a first=("${@:1:$#-1}")
        local last=${!#}
        for pattern in "${first[@]}"; do signal_wait "$sid" TERM "$GRACE" "$pattern"; done
        signal_wait "$sid" TERM "$GRACE" "" "$last"
        signal_wait "$sid" TERM "$GRACE" "$last"
    else
        signal_wait "$sid" TERM "$GRACE" ""
    fi
    left=$(session_pids "$sid" "" | wc -w)
    if (( left > 0 )); then
        echo "$name: $left processes ignored SIGTERM; sending SIGKILL."
        signal_wait "$sid" KILL 10 ""
    fi
    # A killed process may linger as a zombie until it is reaped; it holds no port any more.
    rm -f "$file"
}

# MLflow: the server process first (it stops its workers), then whatever is left. Ray: the raylet
# first (its workers and agents go with it), then the dashboard and the rest, the GCS server
# last. Signalled all at once, some of these processes hang until SIGKILL.
stop_session "MLflow server" "$STATE/mlflow.pid" mlflow "bin/mlflow server" ""
stop_session "Ray head" "$STATE/ray.sid" ray /raylet/raylet gcs_server
stop_session "Ray node" "$STATE/node.sid" ray /raylet/raylet ""
rm -f "$STATE/ray.pids"
echo "Local cluster stopped (logs kept in $STATE/logs)."
