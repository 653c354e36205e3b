# Helpers shared by cluster/up.sh and cluster/join.sh (sourced, not run).

# die MESSAGE: stop with "<script>: error: MESSAGE" on stderr.
die() { echo "$SCRIPT: error: $*" >&2; exit 1; }

# find_tools SCRIPT [TOOL...]: set SCRIPT, BIN (the folder of python, ray and the TOOLs) and PY.
find_tools() {
    SCRIPT=$1
    shift
    if [[ -n ${ALLNC_PYTHON_BIN:-} ]]; then
        BIN=$ALLNC_PYTHON_BIN
    else
        local on_path
        on_path=$(command -v python || command -v python3 || true)
        [[ -n $on_path ]] || die "no python on PATH; activate the project venv or set ALLNC_PYTHON_BIN"
        BIN=$(dirname "$on_path")
    fi
    PY=$BIN/python
    [[ -x $PY ]] || PY=$BIN/python3
    local tool
    for tool in "$PY" "$BIN/ray" "${@/#/$BIN/}"; do
        [[ -x $tool ]] || die "$tool not found; install the project (make install) or set ALLNC_PYTHON_BIN"
    done
    command -v setsid >/dev/null || die "setsid (util-linux) is required"
}

# choose_ray_temp: set RAY_TEMP, Ray's temp folder for the state folder STATE (created).
choose_ray_temp() {
    if [[ -n ${RAY_TMPDIR:-} ]]; then
        RAY_TEMP=$RAY_TMPDIR
    elif (( ${#STATE} <= 36 )); then
        RAY_TEMP=$STATE/ray
    else
        # Ray puts Unix sockets under <temp>/session_<timestamp>/sockets/; their paths must stay
        # under 108 bytes, so a deep state folder gets a short temp folder keyed on its path.
        RAY_TEMP=/tmp/allnc-ray-$(id -u)-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)
    fi
    mkdir -p "$RAY_TEMP"
    RAY_TEMP=$(cd "$RAY_TEMP" && pwd)
}

# session_pids SID PATTERN: processes of session SID whose command line contains PATTERN.
session_pids() {
    local pid cmd
    # Zombies (state Z) are skipped: they hold no ports and wait only for their parent.
    for pid in $(ps -eo pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ {print $1}'); do
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
        if [[ $cmd == *"$2"* ]]; then echo "$pid"; fi
    done
}

# interface_of ADDRESS: the network interface that holds ADDRESS (lo for any 127.x address).
interface_of() {
    if [[ $1 == 127.* ]]; then
        echo lo
        return
    fi
    local iface
    iface=$(ip -o -4 addr show 2>/dev/null | awk -v a="$1" '{split($4, ip, "/"); if (ip[1] == a) {print $2; exit}}')
    [[ -n $iface ]] || die "no network interface of this machine holds $1"
    echo "$iface"
}

# The environment every Ray process of ours starts with (and so every job and worker).
ray_environment() {
    export RAY_USAGE_STATS_ENABLED=0
    export RAY_AUTH_MODE=token
    # At 127.0.0.1, Ray swaps --node-ip-address for the machine's LAN address (and its gRPC servers
    # then listen on every interface) unless this is 0; 0 also refuses other nodes, so any other
    # address (a head others join, or a node joining one) keeps Ray's default.
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$([[ $HOST == 127.0.0.1 ]] && echo 0 || echo 1)
    # Collective traffic goes over the interface that holds the node's address.
    local iface
    iface=$(interface_of "$HOST")
    export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-$iface}
    export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-$iface}
}
