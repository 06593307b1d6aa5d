#!/usr/bin/env bash
# Run a service process and record how it ended: used by clickhouse.sh and kafka.sh
# (under setsid, with stdout and stderr already redirected to the service's log).
#
#   scripts/run-logged.sh NAME PIDFILE [--unbuffered] -- CMD ARGS...
#
# Starts CMD as a child, writes CMD's pid to PIDFILE (so stop and supervision
# signal the real server, not this waiter), waits for it and then appends to the
# log (and to PIDFILE.exit) one line saying how it ended:
#   NAME: pid P ended at T: exit status N          or
#   NAME: pid P ended at T: killed by signal S (SIGNAME)[, core dumped]
# with its peak resident memory when python3 is there (it gives the exact wait
# status; without it, a status above 128 is reported as ambiguous), followed by
# the kernel's out-of-memory evidence: the cgroup oom_kill counter before and
# after, and new OOM lines of `dmesg` when the kernel log is readable.
# --unbuffered runs CMD under `stdbuf -o0 -e0` so what it prints (a fatal
# signal's stack trace) reaches the log at once.
set -uo pipefail

name=${1:?name} pidfile=${2:?pidfile}
shift 2
unbuffered=0
if [[ ${1:-} == --unbuffered ]]; then
	unbuffered=1
	shift
fi
[[ ${1:-} == -- ]] && shift
(($#)) || { echo "usage: run-logged.sh NAME PIDFILE [--unbuffered] -- CMD ARGS..." >&2; exit 2; }
if ((unbuffered)) && command -v stdbuf >/dev/null 2>&1; then
	set -- stdbuf -o0 -e0 "$@"
fi

OOM_RE='out of memory|oom-kill|oom_reaper|killed process'

# oom_kills prints the oom_kill counter of this cgroup (v2 or v1), or nothing.
oom_kills() {
	local f
	for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
		[[ -r $f ]] && { sed -n 's/^oom_kill \([0-9]*\)$/\1/p' "$f"; return; }
	done
}

# dmesg_oom prints the kernel log's OOM lines, or fails when the log is not readable.
dmesg_oom() {
	local out
	out=$(dmesg 2>&1) || { printf '%s\n' "$out" | head -n1 >&2; return 1; }
	printf '%s\n' "$out" | grep -iE "$OOM_RE"
	return 0
}

oom_before=$(oom_kills)
dmesg_before=$(dmesg_oom 2>/dev/null | wc -l) || dmesg_before=

# A handler (not an ignore, which CMD would inherit): this waiter outlives
# stray signals and still reports; CMD gets the default dispositions.
trap ':' TERM INT HUP

tmp_pid="$pidfile.tmp.$$"
status=""
if [[ -z ${RUN_LOGGED_NO_PYTHON:-} ]] && command -v python3 >/dev/null 2>&1; then
	# Exact wait status and peak RSS (wait4's rusage).
	# The status comes back on fd 3; CMD keeps this script's stdin, stdout (the log) and stderr.
	# shellcheck disable=SC2016
	py='
import os, signal, sys
tmp, pidfile, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
out = os.fdopen(3, "w")
pid = os.fork()
if pid == 0:
    out.close()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"run-logged: cannot run {argv[0]}: {e}", file=sys.stderr, flush=True)
        os._exit(127)
with open(tmp, "w") as f:
    f.write(f"{pid}\n")
os.replace(tmp, pidfile)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    try:
        _, st, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
if os.WIFSIGNALED(st):
    sig = os.WTERMSIG(st)
    try:
        sname = signal.Signals(sig).name
    except ValueError:
        sname = "?"
    how = f"killed by signal {sig} ({sname})" + (", core dumped" if os.WCOREDUMP(st) else "")
else:
    how = f"exit status {os.WEXITSTATUS(st)}"
print(f"{pid}\t{how}; peak RSS {ru.ru_maxrss // 1024} MB", file=out)
'
	exec 4>&1
	status=$(python3 -c "$py" "$tmp_pid" "$pidfile" "$@" 3>&1 1>&4 4>&-)
	exec 4>&-
else
	"$@" &
	child=$!
	echo "$child" >"$tmp_pid" && mv -f "$tmp_pid" "$pidfile"
	rc=0
	while :; do
		wait "$child"
		rc=$?
		kill -0 "$child" 2>/dev/null || break # a trap interrupted wait: wait again
	done
	if ((rc > 128)); then
		status="$child	exit status $rc (128+$((rc - 128)): killed by signal $((rc - 128)) (SIG$(kill -l $((rc - 128)) 2>/dev/null || echo '?')) or exited with $rc; python3 tells them apart)"
	else
		status="$child	exit status $rc"
	fi
fi
pid=${status%%	*}
how=${status#*	}
[[ -n $status ]] || { pid="?"; how="unknown (the waiter failed)"; }
line="$name: pid $pid ended at $(date -u +%Y-%m-%dT%H:%M:%SZ): $how"
{
	echo "$line"
	oom_after=$(oom_kills)
	if [[ -n $oom_before && -n $oom_after ]]; then
		if ((oom_after > oom_before)); then
			echo "$name: the cgroup's oom_kill counter went from $oom_before to $oom_after while it ran: the kernel OOM killer struck"
		else
			echo "$name: cgroup oom_kill counter unchanged ($oom_after)"
		fi
	fi
	if [[ -n $dmesg_before ]] && new=$(dmesg_oom 2>/dev/null); then
		new=$(printf '%s\n' "$new" | sed '/^$/d' | tail -n "+$((dmesg_before + 1))" | tail -n 20)
		if [[ -n $new ]]; then
			echo "$name: kernel OOM messages since it started:"
			printf '%s\n' "$new"
		else
			echo "$name: no kernel OOM messages since it started"
		fi
	else
		echo "$name: kernel log not readable here ($(dmesg 2>&1 >/dev/null | head -n1 || true)); OOM kills unknown from dmesg"
	fi
} 2>/dev/null
printf '%s\n' "$line" >"$pidfile.exit"
