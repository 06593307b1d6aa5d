package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pipeline/api"
	"github.com/maumeter/maumeter/pkg/event"
)

// serve runs h behind the production http.Server of pipeline/api on a loopback port.
func serve(t testing.TB, h http.Handler, timeouts api.Timeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(h, timeouts)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/v1/events"
}

func gz(data []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

// hostileBodies are request bodies a broken or malicious client may send, each with the status
// codes the gateway may answer (200 means the batch was processed event by event).
func hostileBodies() []struct {
	name     string
	body     []byte
	gzip     bool
	chunked  bool // no Content-Length: the limit must hold while reading
	statuses []int
} {
	good := ev("acme", "acme-super", "ok")
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	tenMB := func(unit string) []byte {
		return bytes.Repeat([]byte(unit), 10<<20/len(unit)+1)
	}
	nested := strings.Repeat(`{"a":`, 200_000) + "1" + strings.Repeat("}", 200_000)
	return []struct {
		name     string
		body     []byte
		gzip     bool
		chunked  bool
		statuses []int
	}{
		{"truncated array", []byte("[" + good + "," + good[:30]), false, false, []int{400}},
		{"truncated NDJSON line", []byte(good + "\n" + good[:30]), false, false, []int{200}},
		{"truncated gzip", gz([]byte(good + "\n" + good))[:20], true, false, []int{400}},
		{"cut in a UTF-8 sequence", []byte(strings.Replace(good, `"ok"`, "\"ok\xe2\x82", 1)), false, false, []int{200}},
		{"invalid UTF-8 in guid", []byte(strings.Replace(good, `"ok"`, "\"o\xffk\"", 1)), false, false, []int{200}},
		{"invalid UTF-8 in tenant", []byte(strings.Replace(good, `"acme"`, "\"ac\xc3\x28me\"", 1)), false, false, []int{200}},
		{"overlong UTF-8 slash", []byte(strings.Replace(good, `"ok"`, "\"\xc0\xafok\"", 1)), false, false, []int{200}},
		{"lone surrogate escape", []byte(strings.Replace(good, `"ok"`, `"\ud800ok"`, 1)), false, false, []int{200}},
		{"NUL bytes", []byte(strings.Replace(good, `"ok"`, "\"o\x00k\"", 1) + "\n\x00\x00\x00"), false, false, []int{200}},
		{"wrong types", []byte(strings.Join([]string{
			strings.Replace(good, `"ok"`, `42`, 1),
			strings.Replace(good, `"2026-11-10T11:00:00Z"`, `1762772400`, 1),
			strings.Replace(good, `"search"`, `["search"]`, 1),
			strings.Replace(good, `"acme"`, `null`, 1),
			strings.Replace(good, `"acme-super"`, `{"id":"acme-super"}`, 1),
			strings.Replace(good, `"ok"`, `true`, 1),
			`42`, `null`, `"event"`, `[` + good + `]`,
		}, "\n")), false, false, []int{200}},
		{"array of non-objects", []byte(`[1, "x", null, true, [], 1e999]`), false, false, []int{200}},
		{"huge line under the limit", []byte(strings.Replace(good, `"ok"`, `"`+strings.Repeat("g", 1<<20-200)+`"`, 1)), false, false, []int{200}},
		{"huge line over the limit", []byte(strings.Replace(good, `"ok"`, `"`+strings.Repeat("g", 1<<20)+`"`, 1)), false, false, []int{413}},
		{"deep nesting cut at the limit", []byte(good + "\n" + nested[:1<<20-len(good)-1]), false, false, []int{200}},
		{"deep nesting, complete", []byte(good + "\n" + strings.Repeat(`{"a":`, 100_000) + "1" + strings.Repeat("}", 100_000)), false, false, []int{200}},
		{"deep array", []byte(strings.Repeat("[", 500_000)), false, false, []int{400}},
		{"random binary", random(64 << 10), false, false, []int{200, 400}},
		{"random binary, gzip header", append([]byte{0x1f, 0x8b, 8, 0}, random(64<<10)...), true, false, []int{400}},
		{"only blank lines", []byte(strings.Repeat("\r\n \t\n", 1000)), false, false, []int{400}},
		{"10 MB of events", tenMB(good + "\n"), false, false, []int{413}},
		{"10 MB of events, chunked", tenMB(good + "\n"), false, true, []int{413}},
		{"10 MB of spaces, chunked", tenMB(" "), false, true, []int{413}},
		{"10 MB of random, chunked", random(10 << 20), false, true, []int{413}},
		{"10 MB gzip bomb", gz(tenMB("\n")), true, false, []int{413}},
		{"10 MB of events, gzip", gz(tenMB(good + "\n")), true, true, []int{413}},
		{"1,000 events of 1 KiB", bytes.Repeat([]byte(strings.Replace(good, `"ok"`, `"`+strings.Repeat("k", 128)+`"`, 1)+strings.Repeat(" ", 800)+"\n"), 1000), false, false, []int{200}},
	}
}

// TestMalformedInputNeverCrashesOrStalls sends every hostile body, several times at once, to
// the gateway behind its real HTTP server: each gets a definite, well-formed answer within
// seconds; a good request is served promptly after them; what was produced is valid.
func TestMalformedInputNeverCrashesOrStalls(t *testing.T) {
	h, rec, keys, _ := recordingHandler(t, Config{}, nil)
	url := serve(t, h, api.Timeouts{ReadHeader: 2 * time.Second, Read: 10 * time.Second})
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/v1/events")
	do := func(body []byte, gzipped, chunked bool) (int, []byte, time.Duration, error) {
		header := http.Header{"Authorization": {"Bearer " + keys.acme}}
		if gzipped {
			header.Set("Content-Encoding", "gzip")
		}
		start := time.Now()
		code, data, err := rawPost(addr, header, body, chunked)
		return code, data, time.Since(start), err
	}
	var wg sync.WaitGroup
	for _, c := range hostileBodies() {
		for range 3 { // at once, to catch a handler that serializes or deadlocks
			wg.Go(func() {
				code, data, took, err := do(c.body, c.gzip, c.chunked)
				if err != nil {
					t.Errorf("%s: %v after %s", c.name, err, took)
					return
				}
				if !bytes.Contains([]byte(fmt.Sprint(c.statuses)), []byte(fmt.Sprint(code))) {
					t.Errorf("%s: status %d %.200s, want one of %v", c.name, code, data, c.statuses)
				}
				if took > 10*time.Second {
					t.Errorf("%s: answered after %s", c.name, took)
				}
				var v map[string]any
				if err := json.Unmarshal(data, &v); err != nil {
					t.Errorf("%s: answer %.200q is not JSON: %v", c.name, data, err)
				}
				if code == 200 {
					var resp Response
					json.Unmarshal(data, &resp)
					for _, rj := range resp.Rejected {
						if rj.Reason == "" || rj.Message == "" || rj.Index < 0 {
							t.Errorf("%s: rejection %+v", c.name, rj)
						}
					}
				}
			})
		}
	}
	wg.Wait()
	start := time.Now()
	code, data, _, err := do([]byte(ev("acme", "acme-super", "after")), false, false)
	if err != nil || code != 200 || !bytes.Contains(data, []byte(`"accepted":1`)) || time.Since(start) > 2*time.Second {
		t.Fatalf("good request after the hostile ones: %d %s %v in %s", code, data, err, time.Since(start))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, e := range rec.events {
		if e.TenantID != "acme" || !strings.HasPrefix(e.AppID, "acme-") || !event.ValidID(e.AppID) {
			t.Errorf("produced %+v", e)
		}
		b, _ := e.AppendBinary(nil)
		if d, err := event.Decode(b); err != nil || d.GUID != e.GUID {
			t.Errorf("produced event does not survive the wire: %+v %v", e, err)
		}
	}
	t.Logf("%d hostile bodies ×3 answered; %d valid events among them produced", len(hostileBodies()), len(rec.events))
}

// rawPost sends a request as a client that writes its whole body whatever happens, and reads
// the answer meanwhile: a gateway may answer (413) before the body is sent, and an http.Client
// then sometimes reports its broken pipe instead of the answer.
func rawPost(addr string, header http.Header, body []byte, chunked bool) (int, []byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	var head bytes.Buffer
	head.WriteString("POST /v1/events HTTP/1.1\r\nHost: gateway\r\n")
	header.Write(&head)
	if chunked {
		head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	} else {
		fmt.Fprintf(&head, "Content-Length: %d\r\n\r\n", len(body))
	}
	go func() {
		w := bufio.NewWriter(conn)
		w.Write(head.Bytes())
		if chunked {
			cw := httputil.NewChunkedWriter(w)
			for b := body; len(b) > 0; b = b[min(len(b), 32<<10):] {
				cw.Write(b[:min(len(b), 32<<10)])
			}
			cw.Close()
			w.WriteString("\r\n")
		} else {
			w.Write(body)
		}
		w.Flush()
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, data, err
}

// TestSlowClientsCannotHoldTheGateway: a client that sends its headers or its body too slowly
// is cut off by the server's timeouts, and many of them at once do not delay anyone else.
func TestSlowClientsCannotHoldTheGateway(t *testing.T) {
	h, rec, keys, _ := recordingHandler(t, Config{}, nil)
	// A normal request must be served well within read: a gateway held by the slow clients
	// would make it wait for their timeouts.
	const readHeader, read = 500 * time.Millisecond, 2 * time.Second
	url := serve(t, h, api.Timeouts{ReadHeader: readHeader, Read: read})
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/v1/events")
	body := ev("acme", "acme-super", "slow") + "\n"
	// drip writes s a byte at a time every 50 ms until the server closes the connection, and
	// returns when the server closed it (or answered).
	drip := func(name, head, s string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		start := time.Now()
		closed := make(chan string, 1)
		go func() {
			line, err := bufio.NewReader(conn).ReadString('\n')
			closed <- fmt.Sprintf("%q %v", line, err)
		}()
		io.WriteString(conn, head)
		for i := 0; ; i++ {
			select {
			case got := <-closed:
				if took := time.Since(start); took > read+time.Second {
					t.Errorf("%s: connection held for %s (%s)", name, took, got)
				}
				if strings.Contains(got, " 200 ") {
					t.Errorf("%s: a request sent too slowly was answered 200", name)
				}
				return
			case <-time.After(50 * time.Millisecond):
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("%s: connection still open after 10s", name)
				return
			}
			if i < len(s) {
				conn.Write([]byte{s[i]})
			}
		}
	}
	headers := fmt.Sprintf("POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", keys.acme, len(body)+2000)
	var wg sync.WaitGroup
	for i := range 50 {
		if i%2 == 0 {
			wg.Go(func() { drip("slow headers", "", headers+body) })
		} else {
			wg.Go(func() { drip("slow body", headers, body+strings.Repeat(" ", 2000)) })
		}
	}
	// Meanwhile a normal client is served at once.
	time.Sleep(100 * time.Millisecond)
	for range 5 {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(ev("acme", "acme-super", "fast")))
		req.Header.Set("Authorization", "Bearer "+keys.acme)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || time.Since(start) > read/2 {
			t.Errorf("normal request among slow clients: %d after %s", resp.StatusCode, time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	for _, e := range rec.events {
		if e.GUID == "slow" {
			t.Fatal("an event of a slow client was produced")
		}
	}
}
