// Package e2e runs the built maumeter binary as separate processes against the real Kafka broker
// and the real ClickHouse server that `make test` starts (scripts/with-services.sh), and checks
// what comes out against a truth the test computes on its own.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/maumeter/maumeter/internal/clock"
)

var (
	binary      string // the maumeter binary built by TestMain
	brokers     = os.Getenv("MAUMETER_KAFKA_BROKERS")
	clickhouseA = os.Getenv("MAUMETER_CLICKHOUSE_ADDR")
	// clockNow is the clock of the tests and of every maumeter process they start: the wall
	// clock, or with MAUMETER_FAKE_NOW an offset clock that TestMain pins
	// (MAUMETER_FAKE_NOW_AT, see internal/clock), so that the processes, which inherit the
	// environment, read the same clock as the test whenever they start or restart. Every
	// date a test derives (event ts, months, purchase days) comes from it.
	clockNow func() time.Time
)

func TestMain(m *testing.M) {
	var err error
	if clockNow, err = clock.Pin(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	catalogue = catalogueAt(clockNow())
	if brokers == "" || clickhouseA == "" {
		if os.Getenv("MAUMETER_REQUIRE_SERVICES") == "1" {
			fmt.Fprintln(os.Stderr, "e2e: MAUMETER_KAFKA_BROKERS and MAUMETER_CLICKHOUSE_ADDR are required (run `make test`)")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "e2e: skipped: no real services (run `make test`, which starts Kafka and ClickHouse)")
		os.Exit(0)
	}
	if v := os.Getenv(clock.Env); v != "" {
		fmt.Fprintf(os.Stderr, "e2e: the clock reads %s (%s=%s)\n", clockNow().UTC().Format(time.RFC3339), clock.Env, v)
	}
	dir, err := os.MkdirTemp("", "maumeter-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "maumeter")
	build := exec.Command("go", "build", "-o", binary, "../cmd/maumeter")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build maumeter:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one maumeter process.
type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, args: args, env: env, log: filepath.Join(t.TempDir(), name+".log")}
	p.start()
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %s %s\n", p.name, strings.Join(p.args, " "))
	p.cmd = exec.Command(binary, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM, waits up to 20 s, then SIGKILL.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not stop within 20s of SIGTERM", p.name)
		p.kill()
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the end of the process log, for failure messages.
func (p *proc) tail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(bytes.TrimSpace(data))
}

// waitHTTP waits until url answers 200, failing with the log of p when p dies or time runs out.
func waitHTTP(t *testing.T, p *proc, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("%s exited before serving %s:\n%s", p.name, url, p.tail())
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not serve %s within %s:\n%s", p.name, url, timeout, p.tail())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func runOnce(t *testing.T, ctx context.Context, env []string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("maumeter %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
