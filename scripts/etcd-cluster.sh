#!/usr/bin/env bash
# A 3-member etcd cluster on loopback for the etcd backend's tests: installs etcd (Debian's
# etcd-server and etcd-client, 3.4) and what the etcd-client crate's build needs (protoc and
# the protobuf include files), starts the members n1, n2, n3 on free loopback ports under a
# directory, kills and restarts one member, names the leader, and stops them all. Only
# members of the cluster in DIR are ever signalled: a member is found in /proc as the etcd
# process with its data dir under DIR on its command line, never by name alone.
#
#   scripts/etcd-cluster.sh install              # apt-get install if etcd, etcdctl or protoc is missing
#   scripts/etcd-cluster.sh start DIR            # new cluster; waits until every member is healthy
#   scripts/etcd-cluster.sh env DIR              # eval "$(...)": exports TOKENVAULT_ETCD_ENDPOINTS, ..._CLUSTER_DIR
#   scripts/etcd-cluster.sh leader DIR           # prints the leader's name (n1, n2 or n3)
#   scripts/etcd-cluster.sh kill DIR nI [SIG]    # signals one member (SIGKILL by default), waits for its exit
#   scripts/etcd-cluster.sh restart DIR nI       # restarts a stopped member on its kept data dir
#   scripts/etcd-cluster.sh stop DIR             # SIGTERM, then SIGKILL after 5 s; idempotent
#   scripts/etcd-cluster.sh run DIR -- CMD...    # start, run CMD with what env exports, stop (also
#                                                # on failure or interrupt); exits with CMD's status
#
# Members take requests up to ETCD_MAX_REQUEST_BYTES (default 8 MiB, etcd's own default is
# 1.5 MiB): the conformance suite saves a token with 1 MiB values, whose one transaction is
# about 4 MiB.
#
# env and run export TOKENVAULT_ETCD_ENDPOINTS (the client endpoints) and
# TOKENVAULT_ETCD_CLUSTER_DIR (DIR, absolute), so that a test can call `leader`, `kill` and
# `restart` on the cluster it runs against.
#
# DIR (created if missing; keep it under target/ so the work tree stays clean) holds:
#   endpoints       the client endpoints, comma-separated host:port (what the tests read)
#   pids            one PID a line, the running members
#   cluster.env     the cluster's token and --initial-cluster, for restarts
#   nI.data/        member nI's data dir (wiped by start, kept by stop, kill and restart)
#   nI.log          member nI's log (appended to across restarts)
#   nI.pid          member nI's PID while it runs
#   nI.endpoint     member nI's client endpoint, host:port
#   nI.peer         member nI's peer URL
#
# The members run with etcd's defaults (heartbeat 100 ms, election timeout 1 s, at most 128
# operations a transaction, 1.5 MiB a request), so the tests meet the limits a production
# cluster has. Auto-compaction is periodic with a 1-minute retention: etcd 3.4 then compacts
# every minute, keeping the last minute's revisions, so a suite that runs for a few minutes
# meets compacted revisions (a read or watch at an old revision fails with "required revision
# has been compacted") as a long-lived production cluster would. Revision mode was not chosen:
# in 3.4 its compactor only looks every 5 minutes, so a test run would hardly ever see it.
set -euo pipefail

MEMBERS=(n1 n2 n3)
HOST=127.0.0.1
# Ports are picked at random below Linux's default ephemeral range (32768-60999), so an
# outgoing connection cannot take one between the check and etcd's bind.
PORT_MIN=20000
PORT_SPAN=12000
HEALTH_TIMEOUT=30
STOP_GRACE=5

# Settings from the environment would override the flags given here (etcd reads ETCD_*,
# etcdctl ETCDCTL_*, and both refuse a flag set twice).
while IFS= read -r var; do
    unset "$var"
done < <(compgen -e | grep -E '^ETCD(CTL)?_' || true)

die() {
    echo "etcd-cluster: $*" >&2
    exit 1
}

usage() {
    sed -n '/^#   scripts/p' "$0" | sed 's/^#   //' >&2
    exit 2
}

# etcdctl against ENDPOINTS with short timeouts: a dead member fails fast instead of hanging.
ctl() {
    local endpoints="$1"
    shift
    etcdctl --endpoints="$endpoints" --dial-timeout=1s --command-timeout=3s "$@"
}

cmd_install() {
    local missing=0 tool
    for tool in etcd etcdctl protoc; do
        command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    # protoc alone is not enough for the etcd-client crate: its protos import google/protobuf.
    [ -f /usr/include/google/protobuf/descriptor.proto ] || missing=1
    if [ "$missing" -eq 1 ]; then
        echo "== apt-get install etcd-server etcd-client protobuf-compiler libprotobuf-dev"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            etcd-server etcd-client protobuf-compiler libprotobuf-dev >/dev/null
    fi
    echo "== $(etcd --version | sed -n 1p), etcdctl $(etcdctl version | sed -n 's/^etcdctl version: //p'), $(protoc --version)"
}

# DIR, created if need be, as an absolute path: the data dir on a member's command line is
# what identifies the process as ours.
abs_dir() {
    local dir="$1"
    mkdir -p "$dir"
    (cd "$dir" && pwd)
}

# Every TCP port bound on this machine, in any state, from /proc (IPv4 and IPv6), decimal.
used_ports() {
    local f
    for f in /proc/net/tcp /proc/net/tcp6; do
        [ -r "$f" ] || continue
        # local_address is ADDR:PORT in hex.
        awk 'NR > 1 { split($2, a, ":"); print a[2] }' "$f"
    done | while IFS= read -r hex; do
        echo $((16#$hex))
    done | sort -u
}

# Six distinct free ports, one a line.
pick_ports() {
    local used picked="" port n=0
    used=" $(used_ports | tr '\n' ' ') "
    while [ "$n" -lt 6 ]; do
        port=$((PORT_MIN + RANDOM % PORT_SPAN))
        case "$used $picked " in
            *" $port "*) continue ;;
        esac
        picked="$picked $port"
        n=$((n + 1))
    done
    echo "$picked" | tr ' ' '\n' | sed '/^$/d'
}

# The PID of member NAME of the cluster in DIR: the etcd process whose command line has this
# member's data dir. Found in /proc, not taken from NAME.pid, so that a lost or stale PID file
# (a member restarted by hand, a PID reused by another process) cannot make us miss a member
# or signal a stranger. Nothing (and status 1) if the member is not running; an exited member
# that is still a zombie has an empty command line and does not count.
member_pid() {
    local dir="$1" name="$2" file pid
    # The pattern comes from a file: on grep's own command line it would match grep itself.
    while IFS= read -r file; do
        pid="${file#/proc/}"
        pid="${pid%/cmdline}"
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = etcd ]; then
            echo "$pid"
            return 0
        fi
    done < <(grep -lzxF -f <(printf '%s\n' "--data-dir=$dir/$name.data") /proc/[0-9]*/cmdline 2>/dev/null)
    return 1
}

# Rewrites DIR/pids from the members that are running.
write_pids() {
    local dir="$1" name
    for name in "${MEMBERS[@]}"; do
        member_pid "$dir" "$name" || true
    done >"$dir/pids.tmp"
    mv "$dir/pids.tmp" "$dir/pids"
}

# Starts member NAME in the background with STATE new or existing, detached from our
# stdin/stdout/stderr (a caller reading our output through a pipe must not wait for etcd) and
# in a session of its own: a Ctrl-C meant for the tests must not reach the members (all three
# stopping at once take 7 s, see cmd_stop), the trap in `run` stops them in order.
launch() {
    local dir="$1" name="$2" state="$3" endpoint peer
    # shellcheck source=/dev/null
    . "$dir/cluster.env"
    endpoint="$(cat "$dir/$name.endpoint")"
    peer="$(cat "$dir/$name.peer")"
    echo "== $(date -u +%FT%TZ) starting $name (--initial-cluster-state $state)" >>"$dir/$name.log"
    setsid etcd \
        --name="$name" \
        --data-dir="$dir/$name.data" \
        --listen-client-urls="http://$endpoint" \
        --advertise-client-urls="http://$endpoint" \
        --listen-peer-urls="$peer" \
        --initial-advertise-peer-urls="$peer" \
        --initial-cluster="$INITIAL_CLUSTER" \
        --initial-cluster-token="$CLUSTER_TOKEN" \
        --initial-cluster-state="$state" \
        --auto-compaction-mode=periodic \
        --auto-compaction-retention=1m \
        --max-request-bytes="${ETCD_MAX_REQUEST_BYTES:-8388608}" \
        --logger=zap \
        --log-outputs=stderr \
        </dev/null >>"$dir/$name.log" 2>&1 &
    # setsid execs etcd in the process bash forked (it forks again only when run as a process
    # group leader, which a job of a script is not), so $! is etcd's PID; taken from /proc
    # once etcd runs, to be sure.
    local child="$!" deadline=$((SECONDS + 2)) pid
    until pid="$(member_pid "$dir" "$name")"; do
        # Exited already (a port taken): wait_healthy reads its log.
        if ! kill -0 "$child" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            pid="$child"
            break
        fi
        sleep 0.02
    done
    echo "$pid" >"$dir/$name.pid"
}

print_logs() {
    local dir="$1" name
    for name in "${MEMBERS[@]}"; do
        echo "---- $name.log (last 40 lines)" >&2
        tail -n 40 "$dir/$name.log" >&2 || true
    done
}

# Waits until each of the three endpoints answers healthy (etcdctl endpoint health, which
# commits a read through raft). Not `endpoint health --cluster`: it checks the client URLs in
# the member list, and a member that has not yet published its own is not in that list, so a
# cluster with a member stuck at startup passes it (seen with a member stopped by SIGSTOP at
# birth; the member list shows it without a client URL). Status 2 if a member exited
# because its port was taken (the caller picks new ports), 1 on a timeout or another exit.
wait_healthy() {
    local dir="$1" endpoints deadline name
    endpoints="$(cat "$dir/endpoints")"
    deadline=$((SECONDS + HEALTH_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        for name in "${MEMBERS[@]}"; do
            if ! member_pid "$dir" "$name" >/dev/null; then
                if grep -q 'address already in use' "$dir/$name.log"; then
                    return 2
                fi
                echo "etcd-cluster: member $name exited" >&2
                return 1
            fi
        done
        if ctl "$endpoints" endpoint health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "etcd-cluster: not healthy after ${HEALTH_TIMEOUT} s" >&2
    ctl "$endpoints" endpoint health >&2 || true
    ctl "$endpoints" member list >&2 || true
    return 1
}

# Fails if a member of a cluster in DIR is running: start would wipe its data dir.
check_stopped() {
    local dir="$1" name pid
    for name in "${MEMBERS[@]}"; do
        if pid="$(member_pid "$dir" "$name")"; then
            die "member $name of a cluster in $dir is running (PID $pid): stop it first"
        fi
    done
}

cmd_start() {
    local dir="$1" attempt name i ports initial token endpoints status started
    dir="$(abs_dir "$dir")"
    check_stopped "$dir"
    command -v etcd >/dev/null 2>&1 || die "etcd is not installed (run: $0 install)"
    started="$(date +%s%N)"
    for attempt in 1 2 3; do
        for name in "${MEMBERS[@]}"; do
            rm -rf "${dir:?}/$name.data" "$dir/$name.pid"
            : >"$dir/$name.log"
        done
        mapfile -t ports < <(pick_ports)
        initial=""
        endpoints=""
        i=0
        for name in "${MEMBERS[@]}"; do
            echo "$HOST:${ports[$i]}" >"$dir/$name.endpoint"
            echo "http://$HOST:${ports[$((i + 3))]}" >"$dir/$name.peer"
            initial="${initial:+$initial,}$name=http://$HOST:${ports[$((i + 3))]}"
            endpoints="${endpoints:+$endpoints,}$HOST:${ports[$i]}"
            i=$((i + 1))
        done
        # A token of its own per cluster: members of an earlier cluster that used the same
        # ports cannot join this one.
        token="tokenvault-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
        printf 'CLUSTER_TOKEN=%q\nINITIAL_CLUSTER=%q\n' "$token" "$initial" >"$dir/cluster.env"
        echo "$endpoints" >"$dir/endpoints"
        for name in "${MEMBERS[@]}"; do
            launch "$dir" "$name" new
        done
        write_pids "$dir"
        status=0
        wait_healthy "$dir" || status=$?
        if [ "$status" -eq 0 ]; then
            echo "== etcd cluster healthy in $((($(date +%s%N) - started) / 1000000)) ms: $endpoints ($dir)"
            return 0
        fi
        # The members of a cluster that never formed keep no data worth a clean stop, and
        # without a quorum they can take more than the grace period to exit: SIGKILL at once.
        cmd_stop "$dir" 0 >/dev/null 2>&1
        if [ "$status" -ne 2 ]; then
            print_logs "$dir"
            die "the cluster did not start"
        fi
        echo "etcd-cluster: a port was taken (attempt $attempt), picking new ones" >&2
    done
    print_logs "$dir"
    die "the cluster did not start: no free ports after 3 attempts"
}

# SIGTERM to the members NAME..., then SIGKILL to those still running after GRACE s.
stop_members() {
    local dir="$1" grace="$2" name pid deadline alive
    shift 2
    for name in "$@"; do
        if pid="$(member_pid "$dir" "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    deadline=$((SECONDS + grace))
    while :; do
        alive=0
        for name in "$@"; do
            if pid="$(member_pid "$dir" "$name")"; then
                alive=1
                if [ "$SECONDS" -ge "$deadline" ]; then
                    echo "etcd-cluster: $name (PID $pid) still running ${grace} s after SIGTERM: SIGKILL" >&2
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            fi
        done
        [ "$alive" -eq 1 ] || break
        sleep 0.1
    done
}

# Stops every member of the cluster in DIR; GRACE (default STOP_GRACE) is the time each
# group gets between SIGTERM and SIGKILL.
cmd_stop() {
    local dir="$1" grace="${2:-$STOP_GRACE}" name leader followers=()
    [ -d "$dir" ] || return 0
    dir="$(abs_dir "$dir")"
    # The followers first, then the leader. A leader given SIGTERM hands its leadership to a
    # follower before it exits; when that follower is stopping too, etcd 3.4 waits out the
    # transfer and exits only about 7 s later. In this order the stop takes a fraction of a second.
    # (Without a grace period the order does not matter, and a member that never joined a
    # quorum would keep the status request waiting for its timeout.)
    leader=""
    if [ "$grace" -gt 0 ]; then
        leader="$(leader_now "$dir")" || leader=""
    fi
    for name in "${MEMBERS[@]}"; do
        [ "$name" = "$leader" ] || followers+=("$name")
    done
    stop_members "$dir" "$grace" "${followers[@]}"
    if [ -n "$leader" ]; then
        stop_members "$dir" "$grace" "$leader"
    fi
    for name in "${MEMBERS[@]}"; do
        rm -f "$dir/$name.pid"
    done
    : >"$dir/pids"
    echo "== etcd cluster stopped ($dir)"
}

check_member() {
    local name
    for name in "${MEMBERS[@]}"; do
        [ "$name" = "$1" ] && return 0
    done
    die "no member $1 (members: ${MEMBERS[*]})"
}

cmd_kill() {
    local dir="$1" name="$2" sig="${3:-KILL}" pid deadline
    check_member "$name"
    dir="$(abs_dir "$dir")"
    pid="$(member_pid "$dir" "$name")" || die "member $name is not running"
    kill -s "$sig" "$pid"
    deadline=$((SECONDS + 10))
    while member_pid "$dir" "$name" >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "member $name (PID $pid) still running 10 s after signal $sig"
        sleep 0.05
    done
    write_pids "$dir"
}

cmd_restart() {
    local dir="$1" name="$2" pid endpoint deadline
    check_member "$name"
    dir="$(abs_dir "$dir")"
    [ -f "$dir/cluster.env" ] || die "no cluster in $dir"
    if pid="$(member_pid "$dir" "$name")"; then
        die "member $name is running (PID $pid)"
    fi
    [ -d "$dir/$name.data" ] || die "member $name has no data dir"
    # Its data dir has the member's identity and WAL: it rejoins as the member it was and
    # catches up from the leader.
    launch "$dir" "$name" existing
    write_pids "$dir"
    endpoint="$(cat "$dir/$name.endpoint")"
    deadline=$((SECONDS + HEALTH_TIMEOUT))
    until ctl "$endpoint" endpoint health >/dev/null 2>&1; do
        if ! member_pid "$dir" "$name" >/dev/null; then
            print_logs "$dir"
            die "member $name exited on restart"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            print_logs "$dir"
            die "member $name not healthy ${HEALTH_TIMEOUT} s after its restart"
        fi
        sleep 0.1
    done
}

# The name of the member that says it leads, asking each running member once; status 1 if
# none does (during an election, or without a quorum).
leader_now() {
    local dir="$1" name status
    for name in "${MEMBERS[@]}"; do
        member_pid "$dir" "$name" >/dev/null || continue
        # -w simple: endpoint, ID, version, db size, is leader, is learner, raft term, ...
        status="$(ctl "$(cat "$dir/$name.endpoint")" endpoint status -w simple 2>/dev/null)" || continue
        if [ "$(echo "$status" | awk -F', ' '{print $5}')" = "true" ]; then
            echo "$name"
            return 0
        fi
    done
    return 1
}

# The leader's name. Waits up to 10 s for one, so that right after the leader's death it
# names the new one.
cmd_leader() {
    local dir="$1" deadline
    dir="$(abs_dir "$dir")"
    deadline=$((SECONDS + 10))
    until leader_now "$dir"; do
        [ "$SECONDS" -lt "$deadline" ] || die "no leader after 10 s"
        sleep 0.1
    done
}

cmd_env() {
    local dir="$1"
    [ -s "$dir/endpoints" ] || die "no cluster in $dir"
    dir="$(abs_dir "$dir")"
    # Endpoints are host:port lists: nothing in them needs more than single quotes.
    printf "export TOKENVAULT_ETCD_ENDPOINTS='%s'\n" "$(cat "$dir/endpoints")"
    printf 'export TOKENVAULT_ETCD_CLUSTER_DIR=%q\n' "$dir"
}

cmd_run() {
    local dir="$1" status
    shift
    [ "${1:-}" = "--" ] && shift
    [ "$#" -gt 0 ] || usage
    dir="$(abs_dir "$dir")"
    # Before the trap: a cluster already running in DIR is not ours to stop.
    check_stopped "$dir"
    # Stops the cluster however this shell ends: COMMAND's status, an error, or a signal
    # (HUP, INT and TERM end the shell through exit, which runs the EXIT trap).
    trap 'cmd_stop "$dir"' EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    cmd_start "$dir"
    eval "$(cmd_env "$dir")"
    echo "== TOKENVAULT_ETCD_ENDPOINTS=$TOKENVAULT_ETCD_ENDPOINTS: $*"
    status=0
    "$@" || status=$?
    exit "$status"
}

[ "$#" -ge 1 ] || usage
command="$1"
shift
case "$command" in
    install) [ "$#" -eq 0 ] || usage; cmd_install ;;
    start) [ "$#" -eq 1 ] || usage; cmd_start "$1" ;;
    stop) [ "$#" -eq 1 ] || usage; cmd_stop "$1" ;;
    env) [ "$#" -eq 1 ] || usage; cmd_env "$1" ;;
    leader) [ "$#" -eq 1 ] || usage; cmd_leader "$1" ;;
    kill) { [ "$#" -eq 2 ] || [ "$#" -eq 3 ]; } || usage; cmd_kill "$@" ;;
    restart) [ "$#" -eq 2 ] || usage; cmd_restart "$1" "$2" ;;
    run) [ "$#" -ge 2 ] || usage; cmd_run "$@" ;;
    *) usage ;;
esac
