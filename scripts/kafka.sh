#!/usr/bin/env bash
# Apache Kafka 4.4 (KRaft, single combined broker+controller) on loopback
# without Docker: jars from Maven Central via scripts/kafka/pom.xml.
#
#   scripts/kafka.sh fetch                        # jars into .cache/kafka/libs/
#   scripts/kafka.sh start DATADIR [PORT CONTROLLER_PORT]
#   scripts/kafka.sh stop DATADIR
#   scripts/kafka.sh restart DATADIR
#   scripts/kafka.sh status DATADIR
#
# DATADIR holds server.properties, log4j2.properties, kafka.ports, kafka.pid,
# kafka.log and the log.dirs (DATADIR/data). Storage is formatted once; later
# starts reuse it. `start DATADIR` without ports reuses the remembered ones
# (a formatted DATADIR is bound to its controller port). The JVM runs under
# scripts/run-logged.sh: when it ends, kafka.log and kafka.pid.exit say how.
# The jars must match scripts/checksums.txt, checked on every fetch: a
# corrupted or partial libs/ is fetched again.
#
# Optional, for tests of TLS and SASL (read by start; give them again on restart):
#   KAFKA_EXTRA_LISTENER=PROTO://127.0.0.1:PORT  a second client listener, PROTO one of SSL,
#                                                SASL_PLAINTEXT, SASL_SSL (the broker itself
#                                                keeps using PLAINTEXT)
#   KAFKA_EXTRA_CONFIG=FILE                      appended to server.properties: that
#                                                listener's ssl.* and sasl settings
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K_DIR="$CACHE_DIR/kafka"
K_LIBS="$K_DIR/libs"
K_POM="$REPO_ROOT/scripts/kafka/pom.xml"
K_M2="${KAFKA_MAVEN_REPO:-$K_DIR/m2}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-180}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"

usage() {
	print_header "${BASH_SOURCE[0]}"
	exit 2
}

need_java() {
	need java "install a Java 17+ runtime (Debian: apt-get install -y openjdk-17-jre-headless)"
	local v major
	v=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')
	major=${v#1.}
	major=${major%%.*}
	[[ $major =~ ^[0-9]+$ ]] || die "kafka: could not read the Java version from 'java -XshowSettings:properties -version'"
	((major >= 17)) || die "kafka: Kafka 4.4 needs Java 17 or newer, found $v ($(command -v java))"
}

libs_stamp() { sha256sum "$K_POM" | cut -d' ' -f1; }

# jars_ok DIR: the jars in DIR are exactly those scripts/checksums.txt lists (kafka/libs/...),
# each with its SHA-256; prints what differs otherwise. About 0.5 s for the 92 jars.
jars_ok() {
	local dir=$1 want have
	want=$(awk '$1 !~ /^#/ && $2 ~ /^kafka\/libs\// { sub(/^kafka\/libs\//, "", $2); print $1 "  " $2 }' "$CHECKSUMS")
	[[ -n $want ]] || { echo "no kafka/libs/ lines in $CHECKSUMS"; return 1; }
	have=$(cd "$dir" 2>/dev/null && find . -maxdepth 1 -name '*.jar' -printf '%f\n' | sort)
	if [[ $have != "$(cut -c67- <<<"$want" | sort)" ]]; then
		echo "the jars differ from the list in $CHECKSUMS:"
		diff <(cut -c67- <<<"$want" | sort) <(printf '%s\n' "$have") | grep '^[<>]' | sed 's/^</  missing:/; s/^>/  not listed:/' | head -n 20
		return 1
	fi
	(cd "$dir" && sha256sum --quiet --strict -c - <<<"$want" 2>&1) | head -n 20
	return "${PIPESTATUS[0]}"
}

libs_valid() {
	local why
	[[ -f $K_DIR/.libs-ok && $(cat "$K_DIR/.libs-ok") == "$(libs_stamp)" ]] || return 1
	why=$(jars_ok "$K_LIBS") && return 0
	log "kafka: $K_LIBS does not match scripts/checksums.txt (corrupted or partial): fetching again"
	printf '%s\n' "$why" >&2
	return 1
}

# mvn_copy DIR: the runtime jars of scripts/kafka/pom.xml into DIR (from the local Maven repo
# K_M2, downloading what it lacks).
mvn_copy() {
	rm -rf "$1"
	mvn -q -B -ntp -Dstyle.color=never -f "$K_POM" -Dmaven.repo.local="$K_M2" \
		dependency:copy-dependencies -DoutputDirectory="$1" -DincludeScope=runtime </dev/null 2>&1 |
		sed -u 's/\x1b\[[0-9;]*m//g' >&2 ||
		die "kafka: 'mvn dependency:copy-dependencies' failed (is Maven Central reachable? see the output above)"
	compgen -G "$1/kafka_2.13-*.jar" >/dev/null || die "kafka: maven copied no kafka_2.13 jar into $1"
}

do_fetch() {
	libs_valid && return 0
	need mvn "install Apache Maven 3.6+ (Debian: apt-get install -y maven) to download the Kafka jars"
	need_java
	local t0 n why bad
	t0=$(now_ms)
	log "kafka: mvn dependency:copy-dependencies ($K_POM -> $K_LIBS)..."
	rm -rf "$K_DIR/.libs-ok"
	mkdir -p "$K_DIR"
	mvn_copy "$K_LIBS.tmp"
	if ! why=$(jars_ok "$K_LIBS.tmp"); then
		# The local Maven repository may hold the corrupt copy: drop the jars that failed
		# and download them again, once.
		bad=$(sed -n 's/^\(.*\.jar\): FAILED.*/\1/p' <<<"$why")
		if [[ -z $bad ]]; then
			printf '%s\n' "$why" >&2
			die "kafka: the jars Maven copied do not match scripts/checksums.txt (update it when changing scripts/kafka/pom.xml)"
		fi
		log "kafka: $(wc -l <<<"$bad") jar(s) from $K_M2 fail their checksum: removing them there and downloading again"
		while read -r n; do find "$K_M2" -name "$n" -delete; done <<<"$bad"
		mvn_copy "$K_LIBS.tmp"
		why=$(jars_ok "$K_LIBS.tmp") || {
			printf '%s\n' "$why" >&2
			die "kafka: the jars downloaded again still do not match scripts/checksums.txt"
		}
	fi
	rm -rf "$K_LIBS"
	mv "$K_LIBS.tmp" "$K_LIBS"
	libs_stamp >"$K_DIR/.libs-ok"
	n=$(find "$K_LIBS" -name '*.jar' | wc -l)
	log "kafka: $n jars ($(du -sm "$K_LIBS" | cut -f1) MB), checksums verified, ready in $(($(now_ms) - t0)) ms"
}

cmd_fetch() {
	with_lock "$CACHE_DIR/kafka.lock" do_fetch
}

paths() {
	[[ -n ${1:-} ]] || usage
	DATADIR=$(abspath "${1%/}")
	PIDFILE="$DATADIR/kafka.pid"
	LOGFILE="$DATADIR/kafka.log"
	PORTSFILE="$DATADIR/kafka.ports"
	PROPS="$DATADIR/server.properties"
	LOG4J="$DATADIR/log4j2.properties"
	MATCH="$PROPS"
}

write_config() {
	local port=$1 cport=$2 listeners advertised protomap
	listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
	advertised="PLAINTEXT://127.0.0.1:$port"
	protomap="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
	if [[ -n ${KAFKA_EXTRA_LISTENER:-} ]]; then
		listeners+=",$KAFKA_EXTRA_LISTENER"
		advertised+=",$KAFKA_EXTRA_LISTENER"
		protomap+=",${KAFKA_EXTRA_LISTENER%%:*}:${KAFKA_EXTRA_LISTENER%%:*}"
	fi
	cat >"$PROPS.tmp" <<PROPS
# Written by scripts/kafka.sh: single-node KRaft broker+controller on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protomap
log.dirs=$DATADIR/data
num.partitions=8
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=8
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
# maumeter creates its events topic with retention.ms = --close-window + --close-grace (37 d
# by default) and refuses to start on a shorter one; the broker default matches that floor
# for topics created by hand. Local disks are small: nothing here lives that long anyway.
log.retention.hours=888
PROPS
	if [[ -n ${KAFKA_EXTRA_CONFIG:-} ]]; then
		printf '# From KAFKA_EXTRA_CONFIG (%s):\n' "$KAFKA_EXTRA_CONFIG" >>"$PROPS.tmp"
		cat "$KAFKA_EXTRA_CONFIG" >>"$PROPS.tmp"
	fi
	mv -f "$PROPS.tmp" "$PROPS"
	cat >"$LOG4J.tmp" <<'LOG4J'
# Written by scripts/kafka.sh: everything to stdout (redirected to kafka.log).
status = warn
name = kafka-local
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
LOG4J
	mv -f "$LOG4J.tmp" "$LOG4J"
}

java_opts() {
	# shellcheck disable=SC2206
	JAVA_OPTS=($KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
		-Djava.awt.headless=true "-Dlog4j2.configurationFile=$LOG4J" ${KAFKA_JAVA_OPTS:-})
}

format_storage() {
	[[ -f $DATADIR/data/meta.properties ]] && return 0
	local cid t0
	t0=$(now_ms)
	# A cluster id is 16 random bytes, base64url without padding (22 chars). One starting with
	# '-' (1 in 64) would be read as an option by StorageTool's argument parser: draw again.
	cid=-
	while [[ $cid == -* ]]; do
		cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
	done
	java_opts
	java "${JAVA_OPTS[@]}" -cp "$K_LIBS/*" kafka.tools.StorageTool format --standalone \
		-t "$cid" -c "$PROPS" >"$DATADIR/format.log" 2>&1 </dev/null || {
		show_log_tail "$DATADIR/format.log"
		die "kafka: formatting storage in $DATADIR/data failed"
	}
	echo "$cid" >"$DATADIR/cluster.id"
	log "kafka: formatted $DATADIR/data (cluster $cid) in $(($(now_ms) - t0)) ms"
}

cmd_start() {
	paths "${1:-}"
	local port=${2:-} cport=${3:-} oldport oldcport pid t0 i
	oldport=$(read_port "$PORTSFILE" port)
	oldcport=$(read_port "$PORTSFILE" controller_port)
	if [[ -z $port && -z $cport ]]; then
		port=$oldport
		cport=$oldcport
		[[ -n $port && -n $cport ]] ||
			die "kafka: no ports given and none remembered in $PORTSFILE; usage: start DATADIR PORT CONTROLLER_PORT"
	fi
	valid_port "$port" || die "kafka: bad port '$port'"
	valid_port "$cport" || die "kafka: bad controller port '$cport'"
	[[ $port != "$cport" ]] || die "kafka: PORT and CONTROLLER_PORT must differ"
	local extra_port=
	if [[ -n ${KAFKA_EXTRA_LISTENER:-} ]]; then
		[[ $KAFKA_EXTRA_LISTENER =~ ^(SSL|SASL_PLAINTEXT|SASL_SSL)://127\.0\.0\.1:([0-9]+)$ ]] ||
			die "kafka: KAFKA_EXTRA_LISTENER '$KAFKA_EXTRA_LISTENER': want SSL|SASL_PLAINTEXT|SASL_SSL://127.0.0.1:PORT"
		extra_port=${BASH_REMATCH[2]}
		valid_port "$extra_port" || die "kafka: bad port in KAFKA_EXTRA_LISTENER '$KAFKA_EXTRA_LISTENER'"
	fi
	[[ -z ${KAFKA_EXTRA_CONFIG:-} || -r $KAFKA_EXTRA_CONFIG ]] || die "kafka: KAFKA_EXTRA_CONFIG '$KAFKA_EXTRA_CONFIG' is not a readable file"

	pid=$(read_pid "$PIDFILE")
	if pid_alive "$pid" "$MATCH"; then
		[[ $port == "$oldport" && $cport == "$oldcport" ]] ||
			die "kafka: already running (pid $pid) for $DATADIR with ports $oldport/$oldcport; stop it first"
		log "kafka: already running (pid $pid) on 127.0.0.1:$port"
		return 0
	fi
	if [[ -f $DATADIR/data/meta.properties && -n $oldcport && $cport != "$oldcport" ]]; then
		die "kafka: $DATADIR was formatted with controller port $oldcport (KRaft --standalone records it); start it with the same ports or use a new DATADIR"
	fi

	need setsid "install util-linux (provides setsid)"
	cmd_fetch
	need_java
	for p in "$port" "$cport" $extra_port; do
		if tcp_open "$p"; then
			log "kafka: port $p on 127.0.0.1 is already in use"
			exit 3
		fi
	done

	mkdir -p "$DATADIR"
	write_ports "$PORTSFILE" "port=$port" "controller_port=$cport"
	write_config "$port" "$cport"
	format_storage
	java_opts
	t0=$(now_ms)
	# run-logged.sh appends how the JVM ended (exit status or signal, OOM) to the log.
	spawn_service kafka "$PIDFILE" "$LOGFILE" "$DATADIR" -- \
		java "${JAVA_OPTS[@]}" -cp "$K_LIBS/*" kafka.Kafka "$PROPS"
	pid=$SPAWNED_PID

	for ((i = 0; ; i++)); do
		if grep -q 'Kafka Server started' "$LOGFILE" 2>/dev/null && tcp_open "$port"; then
			log "kafka: up (pid $pid) on 127.0.0.1:$port (controller $cport) in $(($(now_ms) - t0)) ms; log $LOGFILE"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			local how
			rm -f "$PIDFILE" # first: a pid file naming a dead server is a crash to with-services.sh
			how=$(exit_line "$PIDFILE")
			show_log_tail "$LOGFILE"
			if grep -q 'Address already in use' "$LOGFILE" 2>/dev/null; then
				log "kafka: a port ($port / $cport) is already in use"
				exit 3
			fi
			die "kafka: broker ended before it started (data dir $DATADIR): $how"
		fi
		if ((i >= KAFKA_START_TIMEOUT * 10)); then
			show_log_tail "$LOGFILE"
			stop_pid kafka "$PIDFILE" "$MATCH" "$KAFKA_STOP_TIMEOUT" || true
			die "kafka: broker not started within ${KAFKA_START_TIMEOUT}s (set KAFKA_START_TIMEOUT to wait longer)"
		fi
		sleep 0.1
	done
}

cmd_stop() {
	paths "${1:-}"
	stop_pid kafka "$PIDFILE" "$MATCH" "$KAFKA_STOP_TIMEOUT"
}

cmd_status() {
	paths "${1:-}"
	local pid
	pid=$(read_pid "$PIDFILE")
	if pid_alive "$pid" "$MATCH"; then
		echo "kafka: running (pid $pid) port=$(read_port "$PORTSFILE" port) controller_port=$(read_port "$PORTSFILE" controller_port)"
		return 0
	fi
	echo "kafka: not running"
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
