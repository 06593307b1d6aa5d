// Command chlaunch runs ClickHouse (clickhouse-local from libchdb.so) as a
// loopback server: it opens the native TCP and HTTP listeners and then keeps
// a never-ending query running so the process stays up until it is signalled.
//
// It is its own module so that the main module's ./... never needs libchdb.
// Build it with scripts/clickhouse.sh fetch, which sets CGO_LDFLAGS.
package main

/*
#cgo LDFLAGS: -lchdb
#include <stdlib.h>
int chdb_query_cmdline(int argc, char **argv);
*/
import "C"

import (
	"flag"
	"fmt"
	"os"
	"unsafe"
)

const keepAlive = "SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; " +
	"SELECT sleepEachRow(1) FROM numbers(1000000000) FORMAT Null " +
	"SETTINGS function_sleep_max_microseconds_per_block=0"

func main() {
	path := flag.String("path", "", "ClickHouse data directory (required)")
	tcpPort := flag.Int("tcp-port", 9000, "native TCP port on 127.0.0.1")
	httpPort := flag.Int("http-port", 8123, "HTTP port on 127.0.0.1")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "usage: chlaunch -path DATADIR [-tcp-port N] [-http-port M] [-- clickhouse-local options]")
		os.Exit(2)
	}
	args := []string{
		"clickhouse", // argv[0]: clickhouse-local's main parses argv[1:] only
		"--path=" + *path,
		"--listen_host=127.0.0.1",
		fmt.Sprintf("--tcp_port=%d", *tcpPort),
		fmt.Sprintf("--http_port=%d", *httpPort),
		"--query=" + keepAlive,
	}
	args = append(args, flag.Args()...) // e.g. --log-level=warning: the server's log on stderr
	// argv must live in C memory: cgo forbids passing Go pointers to Go pointers.
	argv := (**C.char)(C.malloc(C.size_t(len(args)+1) * C.size_t(unsafe.Sizeof(uintptr(0)))))
	slots := unsafe.Slice(argv, len(args)+1)
	for i, a := range args {
		slots[i] = C.CString(a)
	}
	slots[len(args)] = nil
	rc := int(C.chdb_query_cmdline(C.int(len(args)), argv))
	// The keep-alive query never ends on its own: say so when it did, or a dead server leaves
	// an empty log.
	fmt.Fprintf(os.Stderr, "chlaunch: clickhouse-local returned %d: the keep-alive query ended, the server stops\n", rc)
	os.Exit(rc)
}
