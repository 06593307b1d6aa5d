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
# so a test can run "$MAUMETER_KAFKA_SCRIPT" stop|start "$MAUMETER_KAFKA_DATADIR".
# Exits with CMD's exit code (128+N when interrupted by signal N).
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

# stop_all RUN_DIR: stop whatever runs from RUN_DIR and remove it.
stop_all() {
	local run=$1
	[[ -d $run ]] || return 0
	# A service that died during the run is a finding: show why before its log is removed.
	if [[ -f $run/clickhouse.crashes ]]; then
		wslog "NOTE: the embedded clickhouse crashed $(cat "$run/clickhouse.crashes") time(s) during the run and was restarted (logs above)"
	fi
	if [[ -f $run/clickhouse.pid ]] && ! kill -0 "$(read_pid "$run/clickhouse.pid")" 2>/dev/null; then
		wslog "clickhouse (pid $(read_pid "$run/clickhouse.pid")) died during the run"
		show_log_tail "$run/clickhouse.log" 80
	fi
	if [[ -f $run/kafka/kafka.pid ]] && ! kill -0 "$(read_pid "$run/kafka/kafka.pid")" 2>/dev/null; then
		wslog "kafka (pid $(read_pid "$run/kafka/kafka.pid")) died during the run"
		show_log_tail "$run/kafka/kafka.log" 40
	fi
	[[ -f $run/kafka/kafka.pid ]] && MAUMETER_QUIET=1 "$K_SCRIPT" stop "$run/kafka" || true
	[[ -f $run/clickhouse.pid ]] && MAUMETER_QUIET=1 "$CH_SCRIPT" stop "$run/clickhouse" || true
	if [[ ${MAUMETER_KEEP_RUN:-} == 1 ]]; then
		wslog "kept $run (MAUMETER_KEEP_RUN=1)"
	else
		rm -rf "$run"
	fi
}

# Hidden mode: a detached watchdog that cleans up if the parent dies without
# running its trap (SIGKILL, OOM killer).
if [[ ${1:-} == --watchdog ]]; then
	parent=$2 run=$3
	trap '' INT HUP
	trap 'exit 0' TERM
	while kill -0 "$parent" 2>/dev/null; do sleep 1; done
	cmd=$(read_pid "$run/cmd.pid")
	[[ -n $cmd ]] && kill -TERM "$cmd" 2>/dev/null
	stop_all "$run"
	exit 0
fi

# Hidden mode: the ClickHouse supervisor. The embedded ClickHouse (libchdb) has died a few
# times under the full suite on a loaded 2-core machine, with nothing in its log. The product
# rides out a ClickHouse outage (e2e/TestChaos stops it for 20 s), but a server that stays down
# fails every later test. So: when the server dies on its own (its pid file still names the dead
# process a second later; a deliberate `clickhouse.sh stop` removes the file), show its log,
# keep it, count the crash and start it again on the same ports. The crash count is reported when
# the services stop.
if [[ ${1:-} == --supervise-clickhouse ]]; then
	parent=$2 run=$3 restarts=0
	trap 'exit 0' TERM
	while kill -0 "$parent" 2>/dev/null; do
		sleep 0.5
		pid=$(read_pid "$run/clickhouse.pid")
		[[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null || continue
		sleep 1
		kill -0 "$parent" 2>/dev/null || break
		[[ $(read_pid "$run/clickhouse.pid") == "$pid" ]] && ! kill -0 "$pid" 2>/dev/null || continue
		restarts=$((restarts + 1))
		echo "$restarts" >"$run/clickhouse.crashes"
		cp -f "$run/clickhouse.log" "$run/clickhouse.crash$restarts.log" 2>/dev/null
		wslog "clickhouse (pid $pid) died on its own; restarting it on the same ports (crash $restarts)"
		show_log_tail "$run/clickhouse.log" 60
		MAUMETER_QUIET=1 "$CH_SCRIPT" start "$run/clickhouse" || wslog "clickhouse: restart failed"
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

RUN_DIR="" WATCHDOG="" SUPERVISOR="" CMD_PID="" FETCH_PIDS=()

# shellcheck disable=SC2317 # cleanup and on_signal run from traps
cleanup() {
	local rc=$? t0
	trap - EXIT INT TERM HUP
	set +e
	[[ -n $WATCHDOG ]] && kill -TERM "$WATCHDOG" 2>/dev/null
	[[ -n $SUPERVISOR ]] && kill -TERM "$SUPERVISOR" 2>/dev/null && wait "$SUPERVISOR" 2>/dev/null
	for p in "${FETCH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	if [[ -n $RUN_DIR ]]; then
		t0=$(now_ms)
		stop_all "$RUN_DIR"
		((want_ch || want_kafka)) && wslog "services stopped in $(($(now_ms) - t0)) ms"
	fi
	exit "$rc"
}

# shellcheck disable=SC2317
on_signal() {
	local sig=$1 num i
	num=$(kill -l "$sig")
	if [[ -n $CMD_PID ]] && kill -0 "$CMD_PID" 2>/dev/null; then
		wslog "got SIG$sig, stopping the command (pid $CMD_PID)"
		kill -"$sig" "$CMD_PID" 2>/dev/null
		for ((i = 0; i < 300; i++)); do
			kill -0 "$CMD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$CMD_PID" 2>/dev/null && kill -KILL "$CMD_PID" 2>/dev/null
	fi
	exit $((128 + num))
}

trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

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
	"$SCRIPTS/with-services.sh" --supervise-clickhouse "$$" "$RUN_DIR" </dev/null &
	SUPERVISOR=$!
fi
if ((want_kafka)); then
	start_with_retry kafka "$K_SCRIPT" "$RUN_DIR/kafka" 2
	export MAUMETER_KAFKA_BROKERS="127.0.0.1:${PORTS[0]}"
	export MAUMETER_KAFKA_DATADIR="$RUN_DIR/kafka"
	export MAUMETER_KAFKA_SCRIPT="$K_SCRIPT"
	wslog "kafka ready: broker $MAUMETER_KAFKA_BROKERS, controller 127.0.0.1:${PORTS[1]} ($(fmt_s "$STARTED_MS"))"
fi

# Run CMD as a background job so a signal to this script can be handled at
# once (a foreground child would defer the trap); undo the SIGINT/SIGQUIT
# ignore that bash applies to background jobs, and keep stdin when there is one.
if [[ -e /dev/fd/0 ]]; then
	(trap - INT QUIT; exec "$@") <&0 &
else
	(trap - INT QUIT; exec "$@") </dev/null &
fi
CMD_PID=$!
[[ -n $RUN_DIR ]] && echo "$CMD_PID" >"$RUN_DIR/cmd.pid"
rc=0
wait "$CMD_PID" || rc=$?
CMD_PID=""
exit "$rc"
