# shellcheck shell=bash
# Shared helpers for scripts/clickhouse.sh, scripts/kafka.sh and
# scripts/with-services.sh. Source it; it defines functions and REPO_ROOT/CACHE_DIR.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
CACHE_DIR="${MAUMETER_CACHE_DIR:-$REPO_ROOT/.cache}"

_ts() { date +%H:%M:%S; }
# log is informational; MAUMETER_QUIET=1 silences it (errors always print).
log() { [[ ${MAUMETER_QUIET:-} == 1 ]] || printf '[%s] %s\n' "$(_ts)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(_ts)" "$*" >&2; exit 1; }

# need CMD "why/how to install": fail loudly when a prerequisite is missing.
need() {
	command -v "$1" >/dev/null 2>&1 || die "prerequisite '$1' not found in PATH: $2"
}

# print_header FILE: the comment block at the top of FILE, without '# '.
print_header() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1" >&2
}

# now_ms prints a monotonic-enough wall clock in milliseconds.
now_ms() { date +%s%3N; }

# abspath DIR prints the absolute path of DIR (which may not exist yet).
abspath() {
	case "$1" in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s\n' "$PWD/$1" ;;
	esac
}

# with_lock FILE CMD...: run CMD while holding an exclusive flock on FILE, so
# two copies of the repo scripts fetching at once do not trample each other.
with_lock() {
	local file=$1
	shift
	mkdir -p "$(dirname "$file")"
	if command -v flock >/dev/null 2>&1; then
		(
			flock -w 1800 9 || die "timed out waiting for lock $file"
			"$@"
		) 9>"$file"
	else
		"$@"
	fi
}

# pid_alive PID MATCH: true when PID runs and its command line contains MATCH
# (guards against a recycled pid).
pid_alive() {
	local pid=$1 match=$2
	[[ -n $pid ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	[[ -r /proc/$pid/cmdline ]] || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$match"
}

# read_pid PIDFILE prints the pid recorded in PIDFILE, or nothing.
read_pid() { if [[ -f $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# stop_pid NAME PIDFILE MATCH TIMEOUT_S: SIGTERM, wait, SIGKILL after TIMEOUT_S.
stop_pid() {
	local name=$1 pidfile=$2 match=$3 timeout=$4 pid i
	pid=$(read_pid "$pidfile")
	if ! pid_alive "$pid" "$match"; then
		rm -f "$pidfile"
		log "$name: not running"
		return 0
	fi
	# Rename the pid file first: a pid file that names a dead process means the service died
	# on its own (with-services.sh fails the run then); a deliberate stop must not look like that.
	mv -f "$pidfile" "$pidfile.stopping" 2>/dev/null || true
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < timeout * 10; i++)); do
		pid_alive "$pid" "$match" || break
		sleep 0.1
	done
	if pid_alive "$pid" "$match"; then
		log "$name: pid $pid still alive after ${timeout}s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			pid_alive "$pid" "$match" || break
			sleep 0.1
		done
	fi
	# zombie-proof: kill -0 succeeds on a zombie only while its parent lives.
	if pid_alive "$pid" "$match" && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
		mv -f "$pidfile.stopping" "$pidfile" 2>/dev/null
		die "$name: could not stop pid $pid"
	fi
	rm -f "$pidfile" "$pidfile.stopping"
	log "$name: stopped (pid $pid)"
}

# tcp_open PORT: true when something accepts connections on 127.0.0.1:PORT.
tcp_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# show_log_tail FILE [N]: print the last N lines of FILE to stderr.
show_log_tail() {
	local file=$1 n=${2:-40}
	[[ -f $file ]] || return 0
	printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
	tail -n "$n" "$file" >&2
	printf -- '----- end of %s -----\n' "$file" >&2
}

# write_ports FILE k=v...: remember the ports a datadir was started with.
write_ports() {
	local file=$1
	shift
	printf '%s\n' "$@" >"$file.tmp" && mv -f "$file.tmp" "$file"
}

# read_port FILE KEY prints the value of KEY in FILE (k=v lines).
read_port() {
	[[ -f $1 ]] || return 0
	sed -n "s/^$2=\\([0-9]*\\)\$/\\1/p" "$1" | tail -n1
}

# valid_port N: an integer in 1..65535.
valid_port() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

# spawn_service NAME PIDFILE LOGFILE DIR [--unbuffered] -- CMD...: start CMD in DIR in a
# session of its own (a terminal's Ctrl-C or hangup does not reach it; callers stop it
# explicitly) under scripts/run-logged.sh, which writes CMD's pid to PIDFILE and, when CMD
# ends, its exit status or signal (and OOM evidence) to LOGFILE and PIDFILE.exit.
# stdout and stderr go to LOGFILE (the previous one is kept as LOGFILE.prev). Sets SPAWNED_PID.
spawn_service() {
	local name=$1 pidfile=$2 logfile=$3 dir=$4 i
	shift 4
	[[ -f $logfile ]] && mv -f "$logfile" "$logfile.prev"
	rm -f "$pidfile" "$pidfile.exit" "$pidfile.stopping"
	(cd "$dir" && exec setsid "$REPO_ROOT/scripts/run-logged.sh" "$name" "$pidfile" "$@") \
		>"$logfile" 2>&1 </dev/null &
	local waiter=$!
	SPAWNED_PID=""
	for ((i = 0; i < 200; i++)); do
		SPAWNED_PID=$(read_pid "$pidfile")
		[[ -n $SPAWNED_PID ]] && return 0
		kill -0 "$waiter" 2>/dev/null || break
		sleep 0.05
	done
	SPAWNED_PID=$(read_pid "$pidfile")
	[[ -n $SPAWNED_PID ]] && return 0
	show_log_tail "$logfile"
	die "$name: scripts/run-logged.sh did not start the server (no pid in $pidfile)"
}

# exit_line PIDFILE: how the process of PIDFILE ended, as run-logged.sh recorded it
# (waits up to 3 s for the record).
exit_line() {
	local i
	for ((i = 0; i < 30; i++)); do
		[[ -s $1.exit ]] && { cat "$1.exit"; return 0; }
		sleep 0.1
	done
	echo "(no exit record in $1.exit)"
}

CHECKSUMS="$REPO_ROOT/scripts/checksums.txt"

# expected_sum KEY prints the SHA-256 that scripts/checksums.txt records for KEY, or fails.
expected_sum() {
	awk -v k="$1" '$1 !~ /^#/ && $2 == k { print $1; found = 1; exit } END { exit !found }' "$CHECKSUMS"
}

# sha256_of FILE prints FILE's SHA-256.
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
