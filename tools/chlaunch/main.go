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
// From chdb.h: the call returns a result (NULL or one holding the error), not an int.
typedef struct chdb_result chdb_result;
chdb_result *chdb_query_cmdline(int argc, char **argv);
const char *chdb_result_error(chdb_result *result);
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
	res := C.chdb_query_cmdline(C.int(len(args)), argv)
	// The keep-alive query never ends on its own: say so when it did, with its error, or a dead
	// server leaves an empty log. The exit status is 1 either way (the server is gone).
	msg := "no error"
	if res == nil {
		msg = "no result"
	} else if e := C.chdb_result_error(res); e != nil {
		msg = "error: " + C.GoString(e)
	}
	fmt.Fprintf(os.Stderr, "chlaunch: the keep-alive query ended (%s); the server stops\n", msg)
	os.Exit(1)
}
