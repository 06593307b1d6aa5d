// Tests of scripts/with-services.sh, the wrapper `make test` runs every step in: a service
// that dies on its own fails the run with its log, and stopping a run (SIGTERM, Ctrl-C's
// SIGINT, the timeout, or the command just ending) leaves no process of the command behind.
// The orphan tests need only bash and setsid; the service test needs the fetched ClickHouse
// (.cache/chdb, or MAUMETER_CACHE_DIR) and is skipped without it unless
// MAUMETER_REQUIRE_SERVICES=1.
package maumeter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procsWithArg lists the live processes (pid: command line) that have arg as one of their
// arguments.
func procsWithArg(t *testing.T, arg string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil || len(b) == 0 { // gone, or a zombie
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for _, a := range args {
			if a == arg {
				found = append(found, filepath.Base(d)+": "+strings.Join(args, " "))
				break
			}
		}
	}
	return found
}

func needScriptTools(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		t.Skip("no /proc: the orphan checks read it")
	}
	for _, tool := range []string{"bash", "setsid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: scripts/with-services.sh needs it", tool)
		}
	}
}

// withServices starts scripts/with-services.sh ARGS with env added, its output in out.
func withServices(t *testing.T, ctx context.Context, out *bytes.Buffer, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, "scripts/with-services.sh", args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &ee) {
		t.Fatalf("with-services: %v", err)
	}
	return ee.ExitCode()
}

// TestWithServicesStopLeavesNoOrphan: the command runs in a process group of its own, which
// with-services signals when it is stopped or the command ends; a process that ignores
// SIGTERM gets SIGKILL after MAUMETER_STOP_GRACE.
func TestWithServicesStopLeavesNoOrphan(t *testing.T) {
	needScriptTools(t)
	cases := []struct {
		name   string
		signal os.Signal // sent to with-services once the command's processes run; nil: none
		env    []string
		script string // %[1]s is the marker, a sleep duration no other process has
		want   int
	}{
		{"SIGTERM", syscall.SIGTERM, nil,
			`sleep %[1]s & (trap '' TERM INT; exec sleep %[1]s) & sleep %[1]s; wait`, 128 + 15},
		{"SIGINT", syscall.SIGINT, nil,
			`sleep %[1]s & (trap '' TERM INT; exec sleep %[1]s) & sleep %[1]s; wait`, 128 + 2},
		{"timeout", nil, []string{"MAUMETER_RUN_TIMEOUT=2"},
			`sleep %[1]s & sleep %[1]s & sleep %[1]s; wait`, 124},
		{"command ends, leaving children", nil, nil,
			`sleep %[1]s & sleep %[1]s & (trap '' TERM; exec sleep %[1]s) & sleep 1; echo done; exit 7`, 7},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			marker := fmt.Sprintf("%d.%09d", 600+i, rand.IntN(1e9))
			t.Cleanup(func() { // never leave them behind, even when the test fails
				for _, p := range procsWithArg(t, marker) {
					var pid int
					fmt.Sscanf(p, "%d", &pid)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var out bytes.Buffer
			env := append([]string{"MAUMETER_STOP_GRACE=1"}, c.env...)
			cmd := withServices(t, ctx, &out, env, "--", "bash", "-c", fmt.Sprintf(c.script, marker))
			start := time.Now()
			if c.signal != nil {
				for len(procsWithArg(t, marker)) < 3 {
					if time.Since(start) > 20*time.Second {
						t.Fatalf("the command's 3 sleeps did not start; output:\n%s", out.String())
					}
					time.Sleep(20 * time.Millisecond)
				}
				if err := cmd.Process.Signal(c.signal); err != nil {
					t.Fatal(err)
				}
			}
			code := exitCode(t, cmd.Wait())
			if code != c.want {
				t.Errorf("exit status %d, want %d; output:\n%s", code, c.want, out.String())
			}
			if left := procsWithArg(t, marker); len(left) > 0 {
				t.Errorf("processes outlived with-services (%s):\n%s\noutput:\n%s", c.name, strings.Join(left, "\n"), out.String())
			}
			t.Logf("%s: exit %d in %v", c.name, code, time.Since(start).Round(time.Millisecond))
		})
	}
}

func needClickHouseArtifacts(t *testing.T) {
	t.Helper()
	needScriptTools(t)
	cache := os.Getenv("MAUMETER_CACHE_DIR")
	if cache == "" {
		cache = ".cache"
	}
	for _, f := range []string{"chdb/libchdb.so", "chdb/chlaunch"} {
		if _, err := os.Stat(filepath.Join(cache, f)); err != nil {
			if os.Getenv("MAUMETER_REQUIRE_SERVICES") == "1" {
				t.Fatalf("MAUMETER_REQUIRE_SERVICES=1 but %s is missing (scripts/clickhouse.sh fetch): %v", f, err)
			}
			t.Skipf("%s not fetched (scripts/clickhouse.sh fetch): skipping", f)
		}
	}
}

// TestWithServicesServiceDeathFailsRun: a ClickHouse killed during the run fails it (exit 1)
// with the server's log and the signal that ended it, and the command is stopped; a
// deliberate stop and start through scripts/clickhouse.sh (as TestChaos does) does not.
func TestWithServicesServiceDeathFailsRun(t *testing.T) {
	needClickHouseArtifacts(t)
	t.Run("killed", func(t *testing.T) {
		marker := fmt.Sprintf("700.%09d", rand.IntN(1e9))
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		var out bytes.Buffer
		start := time.Now()
		cmd := withServices(t, ctx, &out, nil, "--clickhouse", "--", "bash", "-c",
			`kill -KILL "$(cat "$MAUMETER_CLICKHOUSE_DATADIR/../clickhouse.pid")" && exec sleep `+marker)
		code := exitCode(t, cmd.Wait())
		o := out.String()
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		for _, re := range []string{
			`FAILED: clickhouse \(pid \d+\) died on its own during the run: clickhouse: pid \d+ ended at \S+: killed by signal 9 \(SIGKILL\)`,
			`----- last 80 lines of \S+/clickhouse\.log -----\n(?s:.*)clickhouse: pid \d+ ended at \S+: killed by signal 9 \(SIGKILL\)(?s:.*)----- end of`,
			`stopping the command's process group \d+ with SIGTERM`,
		} {
			if !regexp.MustCompile(re).MatchString(o) {
				t.Errorf("output does not match %q", re)
			}
		}
		if left := procsWithArg(t, marker); len(left) > 0 {
			t.Errorf("the command outlived the run: %v", left)
		}
		if t.Failed() {
			t.Logf("output:\n%s", o)
		}
		t.Logf("failed the run in %v", time.Since(start).Round(time.Millisecond))
	})
	t.Run("deliberate restart", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		var out bytes.Buffer
		cmd := withServices(t, ctx, &out, nil, "--clickhouse", "--", "bash", "-c",
			`set -e; s=$MAUMETER_CLICKHOUSE_SCRIPT d=$MAUMETER_CLICKHOUSE_DATADIR
			"$s" stop "$d"; sleep 1.5; "$s" start "$d"; sleep 1.5; "$s" restart "$d"; sleep 1.5; "$s" status "$d"`)
		code := exitCode(t, cmd.Wait())
		o := out.String()
		if code != 0 || strings.Contains(o, "FAILED") {
			t.Errorf("exit status %d (want 0), output:\n%s", code, o)
		}
		if n := strings.Count(o, "clickhouse: up (pid"); n != 2 {
			t.Errorf("%d restarts in the output, want 2:\n%s", n, o)
		}
	})
}
