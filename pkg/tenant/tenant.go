// Package tenant is the tenant catalogue: who the platform's customers are, their plan, their
// billing time zone and which super apps (production and testing) send their events. The
// catalogue is one YAML file (tenants.yaml, format in docs/ARCHITECTURE.md), loaded and validated
// at start; every error names the file, the tenant and the field. It also holds each tenant's
// ingest keys, hashed (keys.go), and optional per-tenant ingest rate limits. The package does no I/O
// beyond reading that file and keeps nothing mutable: a *Catalog is safe for concurrent use.
package tenant

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/pkg/event"
)

// ErrInvalid wraps every validation error of a catalogue.
var ErrInvalid = errors.New("invalid tenant catalogue")

// Plans names the plans a tenant may be on.
var Plans = []string{"pro", "enterprise", "poc_pro", "poc_enterprise"}

// Tenant is one platform customer.
type Tenant struct {
	ID              string    `yaml:"id"`
	Plan            string    `yaml:"plan"`
	Purchased       string    `yaml:"purchased"` // YYYY-MM-DD, the plan is valid for a year from it
	TimeZone        string    `yaml:"time_zone"` // IANA name of the billing calendar, default UTC
	Apps            []string  `yaml:"apps"`
	TestingApps     []string  `yaml:"testing_apps"`
	BillTestingApps bool      `yaml:"bill_testing_apps"`
	Contract        *Contract `yaml:"contract"`
	// IngestKeys authenticate the tenant's SDKs on POST /v1/events (keys.go).
	IngestKeys []*IngestKey `yaml:"ingest_keys"`
	// IngestLimit overrides the gateway's default rate limit for this tenant.
	IngestLimit *IngestLimit `yaml:"ingest_limit"`

	loc       *time.Location
	purchased time.Time
	apps      map[string]bool // app id → testing
}

// Contract holds the overrides agreed with sales; nil fields keep the plan's figures.
type Contract struct {
	IncludedMAU  *int64  `yaml:"included_mau"`
	UnitPriceUSD *string `yaml:"unit_price_usd"`
}

// IngestLimit is a token bucket of events: EventsPerSecond refill, Burst capacity.
type IngestLimit struct {
	EventsPerSecond float64 `yaml:"events_per_second"` // 0: no limit
	Burst           int     `yaml:"burst"`             // 0: the gateway's default for the rate
}

// Location is the tenant's billing time zone.
func (t *Tenant) Location() *time.Location { return t.loc }

// PurchasedOn is the purchase day of the tenant's plan, midnight in its billing zone.
func (t *Tenant) PurchasedOn() time.Time { return t.purchased }

// App reports whether app is one of the tenant's super apps and whether it is a testing app.
func (t *Tenant) App(app string) (known, testing bool) {
	testing, known = t.apps[app]
	return known, testing
}

// Catalog is a validated tenant catalogue.
type Catalog struct {
	Tenants []*Tenant
	byID    map[string]*Tenant
	keys    *Keyring
}

// Keyring holds the ingest keys of every tenant.
func (c *Catalog) Keyring() *Keyring { return c.keys }

// Keys lists the ingest keys of every tenant, in catalogue order.
func (c *Catalog) Keys() []*IngestKey {
	var out []*IngestKey
	for _, t := range c.Tenants {
		out = append(out, t.IngestKeys...)
	}
	return out
}

// Tenant looks a tenant up by id.
func (c *Catalog) Tenant(id string) (*Tenant, bool) {
	t, ok := c.byID[id]
	return t, ok
}

// Load reads and validates the catalogue at path.
func Load(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenant catalogue: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a catalogue; name is used in error messages.
func Parse(name string, data []byte) (*Catalog, error) {
	var doc struct {
		Tenants []*Tenant `yaml:"tenants"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	if len(doc.Tenants) == 0 {
		return nil, fmt.Errorf("%w: %s: no tenants", ErrInvalid, name)
	}
	c := &Catalog{Tenants: doc.Tenants, byID: make(map[string]*Tenant, len(doc.Tenants))}
	var errs []error
	for i, t := range doc.Tenants {
		where := fmt.Sprintf("%s: tenants[%d]", name, i)
		if t == nil {
			errs = append(errs, fmt.Errorf("%s: empty entry", where))
			continue
		}
		if t.ID != "" {
			where = fmt.Sprintf("%s: tenant %q", name, t.ID)
		}
		if err := t.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if _, dup := c.byID[t.ID]; dup {
			errs = append(errs, fmt.Errorf("%s: id: listed twice", where))
			continue
		}
		c.byID[t.ID] = t
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	keys, err := NewKeyring(c.Keys()...)
	if err != nil { // a key id listed under two tenants
		return nil, fmt.Errorf("%w: %s: ingest_keys: %w", ErrInvalid, name, err)
	}
	c.keys = keys
	return c, nil
}

func (t *Tenant) validate() error {
	if !event.ValidID(t.ID) {
		return fmt.Errorf("id: %q must be 1-64 of [A-Za-z0-9._-]", t.ID)
	}
	planOK := false
	for _, p := range Plans {
		planOK = planOK || t.Plan == p
	}
	if !planOK {
		return fmt.Errorf("plan: %q is not one of %s", t.Plan, strings.Join(Plans, ", "))
	}
	if t.TimeZone == "" {
		t.TimeZone = "UTC"
	}
	loc, err := time.LoadLocation(t.TimeZone)
	if err != nil {
		return fmt.Errorf("time_zone: %q is not an IANA time zone", t.TimeZone)
	}
	t.loc = loc
	if t.Purchased == "" {
		return errors.New("purchased: required (YYYY-MM-DD)")
	}
	if t.purchased, err = time.ParseInLocation(time.DateOnly, t.Purchased, loc); err != nil {
		return fmt.Errorf("purchased: %q is not YYYY-MM-DD", t.Purchased)
	}
	if len(t.Apps) == 0 && len(t.TestingApps) == 0 {
		return errors.New("apps: a tenant needs at least one production or testing app")
	}
	t.apps = make(map[string]bool, len(t.Apps)+len(t.TestingApps))
	for field, list := range map[string][]string{"apps": t.Apps, "testing_apps": t.TestingApps} {
		for _, a := range list {
			if !event.ValidID(a) {
				return fmt.Errorf("%s: %q must be 1-64 of [A-Za-z0-9._-]", field, a)
			}
			if _, dup := t.apps[a]; dup {
				return fmt.Errorf("%s: %q listed twice", field, a)
			}
			t.apps[a] = field == "testing_apps"
		}
	}
	if c := t.Contract; c != nil {
		if c.IncludedMAU != nil && *c.IncludedMAU < 0 {
			return fmt.Errorf("contract.included_mau: %d is negative", *c.IncludedMAU)
		}
		if c.UnitPriceUSD != nil && !isDecimal(*c.UnitPriceUSD) {
			return fmt.Errorf("contract.unit_price_usd: %q is not a non-negative decimal", *c.UnitPriceUSD)
		}
	}
	ids := make(map[string]bool, len(t.IngestKeys))
	for i, k := range t.IngestKeys {
		if k == nil {
			return fmt.Errorf("ingest_keys[%d]: empty entry", i)
		}
		if err := k.validate(t); err != nil {
			return fmt.Errorf("ingest_keys: %w", err)
		}
		if ids[k.ID] {
			return fmt.Errorf("ingest_keys: key %s listed twice", k.ID)
		}
		ids[k.ID] = true
	}
	if l := t.IngestLimit; l != nil {
		if l.EventsPerSecond < 0 || l.EventsPerSecond > 1e9 {
			return fmt.Errorf("ingest_limit.events_per_second: %g must be between 0 (no limit) and 1e9", l.EventsPerSecond)
		}
		// A bucket smaller than a batch would refuse full batches forever.
		if l.Burst != 0 && l.Burst < event.MaxBatchEvents {
			return fmt.Errorf("ingest_limit.burst: %d is below one full batch (%d events)", l.Burst, event.MaxBatchEvents)
		}
	}
	return nil
}

func isDecimal(s string) bool {
	digits, dot := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && digits > 0:
			dot = true
		default:
			return false
		}
	}
	return digits > 0 && s[len(s)-1] != '.'
}
