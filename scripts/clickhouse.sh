#!/usr/bin/env bash
# ClickHouse 26.7 on loopback without Docker: libchdb.so (clickhouse-local,
# from the npm package @chdb/lib-linux-x64-gnu) driven by tools/chlaunch.
#
#   scripts/clickhouse.sh fetch                          # cache lib + launcher in .cache/chdb/
#   scripts/clickhouse.sh start DATADIR [TCP_PORT HTTP_PORT]
#   scripts/clickhouse.sh stop DATADIR
#   scripts/clickhouse.sh restart DATADIR
#   scripts/clickhouse.sh status DATADIR
#
# DATADIR is ClickHouse's --path. The pid file, log and remembered ports live
# beside it: DATADIR/../<name>.pid, <name>.log, <name>.ports. `start DATADIR`
# without ports reuses the remembered ones. The server runs under
# scripts/run-logged.sh: when it ends, the log and <name>.pid.exit say how (exit
# status or signal, peak memory, OOM evidence).
#
# The npm tarball and libchdb.so must match scripts/checksums.txt: a cached
# library that does not (corrupted, partial) is fetched again.
# MAUMETER_VERIFY_CACHE=1 re-hashes it even when its stamp is unchanged.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHDB_NPM_PKG="@chdb/lib-linux-x64-gnu"
CHDB_NPM_VERSION="${CHDB_NPM_VERSION:-26.7.3-stable.1}"
CH_DIR="$CACHE_DIR/chdb"
CH_LIB="$CH_DIR/libchdb.so"
CH_BIN="$CH_DIR/chlaunch"
CH_SRC="$REPO_ROOT/tools/chlaunch"
CH_START_TIMEOUT="${CH_START_TIMEOUT:-90}"
CH_STOP_TIMEOUT="${CH_STOP_TIMEOUT:-20}"

usage() {
	print_header "${BASH_SOURCE[0]}"
	exit 2
}

# lib_stamp: what .lib-ok records once libchdb.so matched scripts/checksums.txt: the version,
# the checksum and the file's size, ctime and inode. A file rewritten, truncated or replaced
# since has another stamp and is hashed again (about 3 s); MAUMETER_VERIFY_CACHE=1 always
# hashes it.
lib_stamp() {
	echo "$CHDB_NPM_VERSION $1 $(stat -c '%s %Z %i' "$CH_LIB")"
}

lib_want() {
	expected_sum "chdb:libchdb.so@$CHDB_NPM_VERSION" ||
		die "clickhouse: no checksum for chdb:libchdb.so@$CHDB_NPM_VERSION in $CHECKSUMS (add it when changing the version)"
}

lib_valid() {
	local want got
	want=$(lib_want)
	[[ -s $CH_LIB ]] || return 1
	if [[ ${MAUMETER_VERIFY_CACHE:-} != 1 && -f $CH_DIR/.lib-ok && $(cat "$CH_DIR/.lib-ok") == "$(lib_stamp "$want")" ]]; then
		return 0
	fi
	got=$(sha256_of "$CH_LIB")
	if [[ $got != "$want" ]]; then
		log "clickhouse: $CH_LIB does not match scripts/checksums.txt (sha256 $got, want $want; corrupted or partial): fetching it again"
		return 1
	fi
	lib_stamp "$want" >"$CH_DIR/.lib-ok"
}

launcher_stamp() {
	{
		echo "lib=$CHDB_NPM_VERSION"
		go env GOVERSION GOARCH 2>/dev/null || true
		cat "$CH_SRC/go.mod" "$CH_SRC/main.go"
	} | sha256sum | cut -d' ' -f1
}

fetch_lib() {
	lib_valid && return 0
	need npm "install Node.js/npm (Debian: apt-get install -y npm) to download $CHDB_NPM_PKG"
	need tar "install tar"
	local t0 tmp tgz want got
	t0=$(now_ms)
	mkdir -p "$CH_DIR"
	rm -f "$CH_DIR/.lib-ok"
	tmp=$(mktemp -d "$CH_DIR/fetch.XXXXXX")
	log "clickhouse: npm pack $CHDB_NPM_PKG@$CHDB_NPM_VERSION (~180 MB)..."
	if ! tgz=$(cd "$tmp" && npm_config_update_notifier=false npm pack --silent \
		"$CHDB_NPM_PKG@$CHDB_NPM_VERSION" </dev/null | tail -n1); then
		rm -rf "$tmp"
		die "clickhouse: 'npm pack $CHDB_NPM_PKG@$CHDB_NPM_VERSION' failed (is the npm registry reachable?)"
	fi
	[[ -f $tmp/$tgz ]] || { rm -rf "$tmp"; die "clickhouse: npm pack produced no tarball (got '$tgz')"; }
	want=$(expected_sum "npm:$CHDB_NPM_PKG@$CHDB_NPM_VERSION") ||
		{ rm -rf "$tmp"; die "clickhouse: no checksum for npm:$CHDB_NPM_PKG@$CHDB_NPM_VERSION in $CHECKSUMS (add it when changing the version)"; }
	got=$(sha256_of "$tmp/$tgz")
	[[ $got == "$want" ]] ||
		{ rm -rf "$tmp"; die "clickhouse: $tgz has sha256 $got, scripts/checksums.txt says $want: refusing it (npm cache corrupt? try 'npm cache verify')"; }
	tar -xzf "$tmp/$tgz" -C "$tmp" package/libchdb.so ||
		{ rm -rf "$tmp"; die "clickhouse: $tgz does not contain package/libchdb.so"; }
	want=$(lib_want)
	got=$(sha256_of "$tmp/package/libchdb.so")
	[[ $got == "$want" ]] ||
		{ rm -rf "$tmp"; die "clickhouse: package/libchdb.so of $tgz has sha256 $got, scripts/checksums.txt says $want"; }
	mv -f "$tmp/package/libchdb.so" "$CH_LIB"
	rm -rf "$tmp"
	lib_stamp "$want" >"$CH_DIR/.lib-ok"
	log "clickhouse: libchdb.so ready ($(du -m "$CH_LIB" | cut -f1) MB) in $(($(now_ms) - t0)) ms"
}

build_launcher() {
	need go "install Go 1.26+ (https://go.dev/dl) to build tools/chlaunch"
	need gcc "install a C compiler (Debian: apt-get install -y gcc) for cgo in tools/chlaunch"
	local stamp t0
	stamp=$(launcher_stamp)
	if [[ -x $CH_BIN && -f $CH_DIR/.chlaunch-stamp && $(cat "$CH_DIR/.chlaunch-stamp") == "$stamp" ]]; then
		return 0
	fi
	t0=$(now_ms)
	log "clickhouse: building launcher tools/chlaunch -> $CH_BIN"
	rm -f "$CH_DIR/.chlaunch-stamp"
	# $ORIGIN: the launcher finds libchdb.so next to itself, wherever .cache is.
	(cd "$CH_SRC" && CGO_ENABLED=1 GOFLAGS='' GOWORK=off \
		CGO_LDFLAGS="-L$CH_DIR -Wl,-rpath,\$ORIGIN" \
		go build -trimpath -o "$CH_BIN.tmp" .) ||
		die "clickhouse: building tools/chlaunch failed (needs cgo: gcc and $CH_LIB)"
	mv -f "$CH_BIN.tmp" "$CH_BIN"
	echo "$stamp" >"$CH_DIR/.chlaunch-stamp"
	log "clickhouse: launcher built in $(($(now_ms) - t0)) ms"
}

do_fetch() {
	fetch_lib
	build_launcher
}

cmd_fetch() {
	with_lock "$CACHE_DIR/chdb.lock" do_fetch
}

# paths DATADIR: sets DATADIR (absolute), PIDFILE, LOGFILE, PORTSFILE.
paths() {
	[[ -n ${1:-} ]] || usage
	DATADIR=$(abspath "${1%/}")
	local parent base
	parent=$(dirname "$DATADIR")
	base=$(basename "$DATADIR")
	PIDFILE="$parent/$base.pid"
	LOGFILE="$parent/$base.log"
	PORTSFILE="$parent/$base.ports"
}

# http_ping PORT: prints the body of GET /ping (ClickHouse answers "Ok.").
http_ping() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
		sed -n "/^\r\{0,1\}$/,\$p" <&3 | tr -d "\r" | sed "/^$/d"
	' _ "$1" 2>/dev/null
}

cmd_start() {
	paths "${1:-}"
	local tcp=${2:-} http=${3:-} pid t0 i
	if [[ -z $tcp && -z $http ]]; then
		tcp=$(read_port "$PORTSFILE" tcp_port)
		http=$(read_port "$PORTSFILE" http_port)
		[[ -n $tcp && -n $http ]] ||
			die "clickhouse: no ports given and none remembered in $PORTSFILE; usage: start DATADIR TCP_PORT HTTP_PORT"
	fi
	valid_port "$tcp" || die "clickhouse: bad TCP port '$tcp'"
	valid_port "$http" || die "clickhouse: bad HTTP port '$http'"
	[[ $tcp != "$http" ]] || die "clickhouse: TCP and HTTP ports must differ"

	pid=$(read_pid "$PIDFILE")
	if pid_alive "$pid" chlaunch; then
		if [[ $(read_port "$PORTSFILE" tcp_port) == "$tcp" && $(read_port "$PORTSFILE" http_port) == "$http" ]]; then
			log "clickhouse: already running (pid $pid) on tcp $tcp / http $http"
			return 0
		fi
		die "clickhouse: already running (pid $pid) for $DATADIR with other ports; stop it first"
	fi

	need setsid "install util-linux (provides setsid)"
	cmd_fetch
	for p in "$tcp" "$http"; do
		if tcp_open "$p"; then
			log "clickhouse: port $p on 127.0.0.1 is already in use"
			exit 3
		fi
	done

	mkdir -p "$DATADIR"
	write_ports "$PORTSFILE" "tcp_port=$tcp" "http_port=$http"
	t0=$(now_ms)
	# Warnings and errors (a fatal signal's stack trace too) go to the log, unbuffered; nothing
	# below that. run-logged.sh appends how the launcher ended (exit status or signal, OOM).
	spawn_service clickhouse "$PIDFILE" "$LOGFILE" "$DATADIR" --unbuffered -- \
		"$CH_BIN" -path "$DATADIR/" -tcp-port "$tcp" -http-port "$http" -- --logger.console=1 --log-level=warning
	pid=$SPAWNED_PID

	for ((i = 0; ; i++)); do
		if [[ $(http_ping "$http") == "Ok." ]]; then
			log "clickhouse: up (pid $pid) tcp 127.0.0.1:$tcp http 127.0.0.1:$http in $(($(now_ms) - t0)) ms; log $LOGFILE"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			local how
			rm -f "$PIDFILE" # first: a pid file naming a dead server is a crash to with-services.sh
			how=$(exit_line "$PIDFILE")
			show_log_tail "$LOGFILE"
			if grep -q 'Address already in use' "$LOGFILE" 2>/dev/null; then
				log "clickhouse: a port (tcp $tcp / http $http) is already in use"
				exit 3
			fi
			die "clickhouse: launcher ended before answering /ping on port $http (data dir $DATADIR): $how"
		fi
		if ((i >= CH_START_TIMEOUT * 10)); then
			show_log_tail "$LOGFILE"
			stop_pid clickhouse "$PIDFILE" chlaunch "$CH_STOP_TIMEOUT" || true
			die "clickhouse: no 'Ok.' from http://127.0.0.1:$http/ping within ${CH_START_TIMEOUT}s (set CH_START_TIMEOUT to wait longer)"
		fi
		sleep 0.1
	done
}

cmd_stop() {
	paths "${1:-}"
	stop_pid clickhouse "$PIDFILE" chlaunch "$CH_STOP_TIMEOUT"
}

cmd_status() {
	paths "${1:-}"
	local pid
	pid=$(read_pid "$PIDFILE")
	if pid_alive "$pid" chlaunch; then
		echo "clickhouse: running (pid $pid) tcp_port=$(read_port "$PORTSFILE" tcp_port) http_port=$(read_port "$PORTSFILE" http_port)"
		return 0
	fi
	echo "clickhouse: not running"
	return 1
}

case "${1:-}" in
fetch) cmd_fetch ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
restart) shift; cmd_stop "$@"; cmd_start "${1:-}" ;;
status) shift; cmd_status "$@" ;;
*) usage ;;
esac
