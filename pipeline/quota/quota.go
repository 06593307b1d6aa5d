// Package quota tells tenants when their month's usage crosses 80 % and 100 % of the included
// MAU, or reaches a POC plan's cap: one notice per crossing, published to the compacted topic
// mau.quota.v1 and delivered to the tenant's webhook (tenant catalogue quota_webhook) as a POST
// signed with HMAC-SHA256, retried with backoff until the receiver answers 2xx.
//
// Exactly one per crossing, also across restarts: the topic is the record. A Notifier (run by
// the counter that owns partition 0, like the month closer) reads the whole topic when it
// starts: a notice already there is never published again, and a notice whose delivery record
// ("d/<id>") is there is never delivered again. A notice is delivered after it is published and
// its delivery recorded after the receiver's 2xx. The one window is a crash between the 2xx and
// that record (or two leaders for a moment during a rebalance): the receiver may then get a
// notice twice, with the same X-Maumeter-Notice-Id to fold it by.
package quota

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/maumeter/maumeter/pkg/plan"
)

// Kind is what a notice tells.
type Kind string

// The crossings a tenant-month can make, each at most once.
const (
	Quota80  Kind = "quota_80"        // billable MAU reached 80 % of the included MAU
	Quota100 Kind = "quota_100"       // billable MAU reached the included MAU: more is pay-as-you-go
	POCCap   Kind = "poc_cap_reached" // a POC plan's cap is reached: new devices are refused
)

// Notice is one crossing of one tenant-month, the body of the webhook and of the topic record.
type Notice struct {
	ID          string    `json:"id"` // stable: tenant, month and kind
	TenantID    string    `json:"tenant_id"`
	Month       string    `json:"month"`
	Kind        Kind      `json:"kind"`
	Plan        string    `json:"plan"`
	IncludedMAU int64     `json:"included_mau"`  // the cap of a POC plan
	Threshold   int64     `json:"threshold_mau"` // the billable MAU the crossing is at
	BillableMAU int64     `json:"billable_mau"`  // when the crossing was seen
	DetectedAt  time.Time `json:"detected_at"`
}

// NoticeID is the stable id of a tenant-month's crossing.
func NoticeID(tenant, month string, k Kind) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + month + "\x00" + string(k)))
	return "qn_" + hex.EncodeToString(h[:10])
}

// Crossed returns the notices a priced tenant-month has reached (hardCap: the plan that priced
// it caps the MAU, a POC plan). Nothing is included, nothing is crossed.
func Crossed(b plan.Bill, hardCap bool, at time.Time) []Notice {
	if b.IncludedMAU <= 0 || b.Plan == "" {
		return nil
	}
	top := Quota100
	if hardCap {
		top = POCCap
	}
	var out []Notice
	for _, c := range []struct {
		kind      Kind
		threshold int64
	}{
		{Quota80, int64(math.Ceil(float64(b.IncludedMAU) * 0.8))},
		{top, b.IncludedMAU},
	} {
		if b.MAU >= c.threshold {
			out = append(out, Notice{ID: NoticeID(b.TenantID, b.Month, c.kind), TenantID: b.TenantID, Month: b.Month,
				Kind: c.kind, Plan: b.Plan, IncludedMAU: b.IncludedMAU, Threshold: c.threshold, BillableMAU: b.MAU,
				DetectedAt: at.UTC()})
		}
	}
	return out
}

// Signature is the X-Maumeter-Signature header of a webhook body sent at ts:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<unix seconds>." + body)>". A receiver
// recomputes v1 and compares in constant time, and refuses a t too far from its clock (replays).
func Signature(secret string, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t + "."))
	m.Write(body)
	return "t=" + t + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a Signature header against body and secret, with ts within tolerance of now.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) bool {
	var t int64
	var v1 string
	for _, part := range strings.Split(header, ",") {
		switch {
		case len(part) > 2 && part[:2] == "t=":
			t, _ = strconv.ParseInt(part[2:], 10, 64)
		case len(part) > 3 && part[:3] == "v1=":
			v1 = part[3:]
		}
	}
	if t == 0 || v1 == "" {
		return false
	}
	ts := time.Unix(t, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return false
	}
	want := Signature(secret, ts, body)
	return hmac.Equal([]byte(want), []byte("t="+strconv.FormatInt(t, 10)+",v1="+v1))
}
