#!/usr/bin/env bash
# Run a command with real local services, started on free random loopback
# ports in a fresh data dir under .cache/run/, and always stopped afterwards.
#
#   scripts/with-services.sh [--clickhouse] [--kafka] -- CMD ARGS...
#
# Exports to CMD:
#   MAUMETER_CLICKHOUSE_ADDR=127.0.0.1:<native tcp port>
#   MAUMETER_CLICKHOUSE_HTTP=127.0.0.1:<http port>
#   MAUMETER_CLICKHOUSE_DATADIR, MAUMETER_CLICKHOUSE_SCRIPT (scripts/clickhouse.sh)
#   MAUMETER_KAFKA_BROKERS=127.0.0.1:<port>
#   MAUMETER_KAFKA_DATADIR, MAUMETER_KAFKA_SCRIPT (scripts/kafka.sh)
#   MAUMETER_REPLICATION_FACTOR=1 MAUMETER_MIN_INSYNC_REPLICAS=1 (one broker)
# so a test can run "$MAUMETER_KAFKA_SCRIPT" stop|start "$MAUMETER_KAFKA_DATADIR".
#
# CMD runs in a process group of its own (a new session). On Ctrl-C (SIGINT),
# SIGTERM, SIGHUP, the timeout, a dead service, or when CMD ends, the whole
# group is signalled (the same signal, or SIGTERM; SIGKILL after
# MAUMETER_STOP_GRACE seconds, default 10), so test binaries and the processes
# they started do not outlive the run.
#
# A service that dies on its own during the run (its pid file names a dead
# process; a deliberate `clickhouse.sh|kafka.sh stop` renames the file first)
# fails the run: its log tail is printed, with how it ended (exit status or
# signal, OOM evidence: see scripts/run-logged.sh), CMD's group is stopped and
# the exit status is 1. MAUMETER_RESTART_CLICKHOUSE=1 instead restarts a dead
# ClickHouse on the same ports (the old behaviour; the run then reports the
# crashes but keeps CMD's status).
#
# Exits with CMD's exit code (128+N when interrupted by signal N, 124 on timeout,
# 1 when a service died). MAUMETER_RUN_TIMEOUT=SECONDS stops CMD after that long.
# MAUMETER_KEEP_RUN=1 keeps the data dir for inspection.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCRIPTS="$REPO_ROOT/scripts"
CH_SCRIPT="$SCRIPTS/clickhouse.sh"
K_SCRIPT="$SCRIPTS/kafka.sh"

usage() {
	print_header "${BASH_SOURCE[0]}"
	exit 2
}

wslog() { printf 'with-services: %s\n' "$*" >&2; }

# dead_service RUN_DIR NAME prints the pid of NAME's server when its pid file names a
# process that is gone (it died on its own), and fails otherwise.
dead_service() {
	local pidfile pid
	case $2 in
	clickhouse) pidfile=$1/clickhouse.pid ;;
	kafka) pidfile=$1/kafka/kafka.pid ;;
	esac
	pid=$(read_pid "$pidfile")
	[[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null && echo "$pid"
}

service_log() {
	case $2 in
	clickhouse) echo "$1/clickhouse.log" ;;
	kafka) echo "$1/kafka/kafka.log" ;;
	esac
}

# report_death RUN_DIR NAME PID: say that NAME died on its own, how, and show its log.
report_death() {
	local run=$1 name=$2 pid=$3 pidfile
	pidfile=$(service_log "$run" "$name")
	pidfile=${pidfile%.log}.pid
	wslog "FAILED: $name (pid $pid) died on its own during the run: $(exit_line "$pidfile")"
	show_log_tail "$(service_log "$run" "$name")" 80
	echo "$name $pid" >>"$run/died"
}

# stop_all RUN_DIR: stop whatever runs from RUN_DIR and remove it. Fails when a service
# had died on its own (reported here unless the monitor already did).
stop_all() {
	local run=$1 name pid failed=0
	[[ -d $run ]] || return 0
	if [[ -f $run/clickhouse.crashes ]]; then
		wslog "NOTE: the embedded clickhouse crashed $(cat "$run/clickhouse.crashes") time(s) during the run and was restarted (MAUMETER_RESTART_CLICKHOUSE=1; logs above)"
	fi
	[[ -f $run/died ]] && failed=1
	for name in clickhouse kafka; do
		pid=$(dead_service "$run" "$name") || continue
		failed=1
		grep -qs "^$name $pid\$" "$run/died" || report_death "$run" "$name" "$pid"
	done
	if [[ -f $run/kafka/kafka.pid ]]; then MAUMETER_QUIET=1 "$K_SCRIPT" stop "$run/kafka" || true; fi
	if [[ -f $run/clickhouse.pid ]]; then MAUMETER_QUIET=1 "$CH_SCRIPT" stop "$run/clickhouse" || true; fi
	if [[ ${MAUMETER_KEEP_RUN:-} == 1 ]]; then
		wslog "kept $run (MAUMETER_KEEP_RUN=1)"
	else
		# A server's run-logged.sh may still be appending how it ended: try again briefly.
		local _
		for _ in 1 2 3 4 5; do
			rm -rf "$run" 2>/dev/null && break
			sleep 0.2
		done
		[[ -d $run ]] && rm -rf "$run"
	fi
	return "$failed"
}

STOP_GRACE=${MAUMETER_STOP_GRACE:-10}

# group_alive PGID: true while a process (not a zombie) is in process group PGID.
group_alive() {
	local pgid=$1 f st rest
	kill -0 -- "-$pgid" 2>/dev/null || return 1
	for f in /proc/[0-9]*/stat; do
		read -r st 2>/dev/null <"$f" || continue
		rest=${st##*) } # after "pid (comm) ": state ppid pgrp ...
		read -r st _ f _ <<<"$rest"
		[[ $f == "$pgid" && $st != Z ]] && return 0
	done
	return 1
}

# stop_group PGID SIG: send SIG to the group, SIGKILL what is left after STOP_GRACE seconds.
stop_group() {
	local pgid=$1 sig=$2 i
	group_alive "$pgid" || return 0
	kill -"$sig" -- "-$pgid" 2>/dev/null
	for ((i = 0; i < STOP_GRACE * 10; i++)); do
		group_alive "$pgid" || return 0
		sleep 0.1
	done
	wslog "process group $pgid still alive ${STOP_GRACE}s after SIG$sig: SIGKILL"
	kill -KILL -- "-$pgid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		group_alive "$pgid" || return 0
		sleep 0.1
	done
	wslog "process group $pgid survived SIGKILL"
}

# Hidden mode: a detached watchdog that cleans up if the parent dies without
# running its trap (SIGKILL, OOM killer).
if [[ ${1:-} == --watchdog ]]; then
	parent=$2 run=$3
	trap '' INT HUP
	trap 'exit 0' TERM
	while kill -0 "$parent" 2>/dev/null; do sleep 1; done
	cmd=$(read_pid "$run/cmd.pid")
	[[ -n $cmd ]] && stop_group "$cmd" TERM
	stop_all "$run"
	exit 0
fi

# Hidden mode: the service monitor. A service whose pid file names a dead process, still so
# half a second later, died on its own (a deliberate `clickhouse.sh|kafka.sh stop` renames the
# pid file before signalling; a start writes a new one). The monitor reports it with its log and
# signals the parent (SIGUSR1), which stops the command and fails the run. With
# MAUMETER_RESTART_CLICKHOUSE=1 a dead ClickHouse is instead restarted on the same ports (its
# log kept as clickhouse.crashN.log, the count reported when the services stop).
if [[ ${1:-} == --monitor ]]; then
	parent=$2 run=$3 restarts=0
	trap 'exit 0' TERM
	while kill -0 "$parent" 2>/dev/null; do
		sleep 0.5
		for name in clickhouse kafka; do
			pid=$(dead_service "$run" "$name") || continue
			sleep 0.5
			kill -0 "$parent" 2>/dev/null || exit 0
			[[ $(dead_service "$run" "$name") == "$pid" ]] || continue
			if [[ $name == clickhouse && ${MAUMETER_RESTART_CLICKHOUSE:-} == 1 ]]; then
				restarts=$((restarts + 1))
				echo "$restarts" >"$run/clickhouse.crashes"
				cp -f "$run/clickhouse.log" "$run/clickhouse.crash$restarts.log" 2>/dev/null
				wslog "clickhouse (pid $pid) died on its own: $(exit_line "$run/clickhouse.pid"); restarting it on the same ports (crash $restarts, MAUMETER_RESTART_CLICKHOUSE=1)"
				show_log_tail "$run/clickhouse.log" 60
				MAUMETER_QUIET=1 "$CH_SCRIPT" start "$run/clickhouse" || wslog "clickhouse: restart failed"
				continue
			fi
			report_death "$run" "$name" "$pid"
			kill -USR1 "$parent" 2>/dev/null
			exit 0
		done
	done
	exit 0
fi

want_ch=0 want_kafka=0
while (($#)); do
	case "$1" in
	--clickhouse) want_ch=1 ;;
	--kafka) want_kafka=1 ;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) echo "with-services: unknown option '$1'" >&2; usage ;;
	esac
	shift
done
(($#)) || usage

need setsid "install util-linux"

# pick_ports N: N distinct ports, free on 127.0.0.1 right now, chosen at
# random below the kernel's ephemeral range so concurrent runs rarely meet.
pick_ports() {
	local n=$1 py
	for py in /usr/bin/python3 python3; do
		if command -v "$py" >/dev/null 2>&1; then
			"$py" - "$n" <<'PY' && return 0
import random, socket, sys
n = int(sys.argv[1]); got = []; held = []
while len(got) < n:
    p = random.randint(20000, 32000)
    if p in got:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    held.append(s); got.append(p)
print(" ".join(map(str, got)))
PY
		fi
	done
	# Fallback without python: probe with bash's /dev/tcp.
	local got=() p tries=0
	while ((${#got[@]} < n)); do
		((tries++ < 1000)) || die "with-services: found no free port"
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
		[[ " ${got[*]} " == *" $p "* ]] && continue
		tcp_open "$p" && continue
		got+=("$p")
	done
	echo "${got[*]}"
}

EXIT_RC="" RUN_DIR="" WATCHDOG="" MONITOR="" TIMER="" CMD_PID="" FETCH_PIDS=()

# shellcheck disable=SC2317 # cleanup and the handlers run from traps
cleanup() {
	local rc=${EXIT_RC:-$?} t0
	trap - EXIT INT TERM HUP USR1 ALRM
	set +e
	# What CMD started and left behind (or all of it, when we got here by `die`).
	[[ -n $CMD_PID ]] && stop_group "$CMD_PID" TERM
	[[ -n $TIMER ]] && kill -TERM "$TIMER" 2>/dev/null
	[[ -n $WATCHDOG ]] && kill -TERM "$WATCHDOG" 2>/dev/null
	[[ -n $MONITOR ]] && kill -TERM "$MONITOR" 2>/dev/null && wait "$MONITOR" 2>/dev/null
	for p in "${FETCH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	if [[ -n $RUN_DIR ]]; then
		t0=$(now_ms)
		if ! stop_all "$RUN_DIR"; then
			wslog "FAILED: a service died on its own during the run (see its log above)"
			((rc == 0)) && rc=1
		fi
		((want_ch || want_kafka)) && wslog "services stopped in $(($(now_ms) - t0)) ms"
	fi
	exit "$rc"
}

# shellcheck disable=SC2317
# stop_cmd SIG: signal CMD's process group and wait for it (SIGKILL after the grace).
stop_cmd() {
	[[ -n $CMD_PID ]] || return 0
	if group_alive "$CMD_PID"; then
		wslog "stopping the command's process group $CMD_PID with SIG$1"
		stop_group "$CMD_PID" "$1"
	fi
	wait "$CMD_PID" 2>/dev/null
}

# shellcheck disable=SC2317
on_signal() {
	local sig=$1
	wslog "got SIG$sig"
	EXIT_RC=$((128 + $(kill -l "$sig")))
	stop_cmd "$sig"
	exit "$EXIT_RC"
}

# shellcheck disable=SC2317
on_service_death() {
	EXIT_RC=1
	stop_cmd TERM
	exit 1
}

# shellcheck disable=SC2317
on_timeout() {
	wslog "FAILED: timed out after ${MAUMETER_RUN_TIMEOUT}s (MAUMETER_RUN_TIMEOUT)"
	EXIT_RC=124
	stop_cmd TERM
	exit 124
}

trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap on_service_death USR1
trap on_timeout ALRM

# Fetch (both at once when both are needed; each is a no-op when cached).
t0=$(now_ms)
# (trap - INT): background jobs would ignore a terminal's Ctrl-C otherwise.
((want_ch)) && { (trap - INT QUIT; exec "$CH_SCRIPT" fetch) & FETCH_PIDS+=($!); }
((want_kafka)) && { (trap - INT QUIT; exec "$K_SCRIPT" fetch) & FETCH_PIDS+=($!); }
for p in "${FETCH_PIDS[@]}"; do
	wait "$p" || die "with-services: fetching services failed (see above)"
done
FETCH_PIDS=()
if (($(now_ms) - t0 > 1000)); then wslog "fetched in $(($(now_ms) - t0)) ms"; fi

if ((want_ch || want_kafka)); then
	mkdir -p "$CACHE_DIR/run"
	RUN_DIR=$(mktemp -d "$CACHE_DIR/run/ws.XXXXXX")
	setsid "$SCRIPTS/with-services.sh" --watchdog "$$" "$RUN_DIR" >/dev/null 2>&1 </dev/null &
	WATCHDOG=$!
fi

# start_with_retry NAME SCRIPT DATADIR NPORTS: start on fresh random ports,
# retrying when a port got taken in the meantime (start exits 3). Sets PORTS.
start_with_retry() {
	local name=$1 script=$2 dir=$3 n=$4 attempt rc t0
	t0=$(now_ms)
	for attempt in 1 2 3 4 5; do
		read -r -a PORTS <<<"$(pick_ports "$n")"
		rc=0
		MAUMETER_QUIET=1 "$script" start "$dir" "${PORTS[@]}" || rc=$?
		((rc == 0)) && { STARTED_MS=$(($(now_ms) - t0)); return 0; }
		((rc == 3)) || die "with-services: $name failed to start (exit $rc)"
		wslog "$name: port clash on ${PORTS[*]}, retrying with other ports ($attempt/5)"
		MAUMETER_QUIET=1 "$script" stop "$dir" || true
		rm -rf "$dir"
	done
	die "with-services: $name: could not find free ports after 5 attempts"
}

fmt_s() { printf '%d.%01d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }

if ((want_ch)); then
	start_with_retry clickhouse "$CH_SCRIPT" "$RUN_DIR/clickhouse" 2
	export MAUMETER_CLICKHOUSE_ADDR="127.0.0.1:${PORTS[0]}"
	export MAUMETER_CLICKHOUSE_HTTP="127.0.0.1:${PORTS[1]}"
	export MAUMETER_CLICKHOUSE_DATADIR="$RUN_DIR/clickhouse"
	export MAUMETER_CLICKHOUSE_SCRIPT="$CH_SCRIPT"
	wslog "clickhouse ready: native $MAUMETER_CLICKHOUSE_ADDR, http $MAUMETER_CLICKHOUSE_HTTP ($(fmt_s "$STARTED_MS"))"
fi
if ((want_kafka)); then
	start_with_retry kafka "$K_SCRIPT" "$RUN_DIR/kafka" 2
	export MAUMETER_KAFKA_BROKERS="127.0.0.1:${PORTS[0]}"
	export MAUMETER_KAFKA_DATADIR="$RUN_DIR/kafka"
	export MAUMETER_KAFKA_SCRIPT="$K_SCRIPT"
	# One broker holds one replica: topics that maumeter creates get replication factor 1
	# (its default is 3, refused above the number of brokers).
	export MAUMETER_REPLICATION_FACTOR=1 MAUMETER_MIN_INSYNC_REPLICAS=1
	wslog "kafka ready: broker $MAUMETER_KAFKA_BROKERS, controller 127.0.0.1:${PORTS[1]} ($(fmt_s "$STARTED_MS"))"
fi

if [[ -n $RUN_DIR ]]; then
	"$SCRIPTS/with-services.sh" --monitor "$$" "$RUN_DIR" </dev/null &
	MONITOR=$!
fi

# Run CMD as a background job so a signal to this script can be handled at
# once (a foreground child would defer the trap), in a session and process
# group of its own (setsid: the job is not a group leader, so setsid does not
# fork and $! is CMD); undo the SIGINT/SIGQUIT ignore that bash applies to
# background jobs, and keep stdin when there is one.
if [[ -e /dev/fd/0 ]]; then
	(trap - INT QUIT; exec setsid "$@") <&0 &
else
	(trap - INT QUIT; exec setsid "$@") </dev/null &
fi
CMD_PID=$!
[[ -n $RUN_DIR ]] && echo "$CMD_PID" >"$RUN_DIR/cmd.pid"
if [[ -n ${MAUMETER_RUN_TIMEOUT:-} ]]; then
	[[ $MAUMETER_RUN_TIMEOUT =~ ^[0-9]+$ ]] || die "with-services: MAUMETER_RUN_TIMEOUT must be whole seconds, got '$MAUMETER_RUN_TIMEOUT'"
	(
		sleep "$MAUMETER_RUN_TIMEOUT" &
		trap 'kill $! 2>/dev/null; exit 0' TERM
		wait $!
		kill -ALRM $$ 2>/dev/null
	) </dev/null &
	TIMER=$!
fi
rc=0
wait "$CMD_PID" || rc=$?
exit "$rc"
