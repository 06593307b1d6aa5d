// Package tenant is the tenant catalogue: who the platform's customers are, their plan purchases
// (with contract overrides), their billing time zone and which super apps (production and
// testing) send their events. The catalogue is one YAML file (tenants.yaml, format in
// docs/CONFIGURATION.md and docs/ARCHITECTURE.md), checked at load against its JSON schema
// (schemas/catalog/tenants.schema.json) and then by Go for what a schema cannot say; every error
// names the file, the tenant and the field. It also holds the keys of the API, hashed (keys.go):
// each tenant's ingest keys (POST /v1/events) and read keys (its MAU and invoices), and the
// operator keys (every tenant's MAU and invoices); and optional per-tenant ingest rate limits. Whether a plan exists and what it costs
// is pkg/plan's business (plan.Catalog.CheckTenants). The package does no I/O beyond reading that
// file and keeps nothing mutable: a *Catalog is safe for concurrent use.
package tenant

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/yamlschema"
	"github.com/maumeter/maumeter/schemas"
)

// ErrInvalid wraps every validation error of a catalogue.
var ErrInvalid = errors.New("invalid tenant catalogue")

// Plans names the plans a tenant may be on unless Parse is told otherwise (KnownPlans): the
// plans of the billing overview, which pkg/plan's embedded catalogue holds.
var Plans = []string{"pro", "enterprise", "poc_pro", "poc_enterprise"}

// Tenant is one platform customer.
type Tenant struct {
	ID string `yaml:"id"`
	// Plan, Purchased and Contract are one purchase: the plan bought on that day (valid for a
	// year from it) and the overrides agreed with sales for it. PlanHistory lists the others.
	Plan      string    `yaml:"plan"`
	Purchased string    `yaml:"purchased"` // YYYY-MM-DD, a day of the billing calendar
	Contract  *Contract `yaml:"contract"`
	// PlanHistory lists the tenant's other purchases, earlier or later, each with its own
	// contract (the tenant's Contract applies to Plan only).
	PlanHistory     []*Purchase `yaml:"plan_history"`
	TimeZone        string      `yaml:"time_zone"` // IANA name of the billing calendar, default UTC
	Apps            []string    `yaml:"apps"`
	TestingApps     []string    `yaml:"testing_apps"`
	BillTestingApps bool        `yaml:"bill_testing_apps"`
	// IngestKeys authenticate the tenant's SDKs on POST /v1/events (keys.go).
	IngestKeys []*IngestKey `yaml:"ingest_keys"`
	// ReadKeys authenticate the tenant's own readers of its MAU and invoices (keys.go).
	ReadKeys []*ReadKey `yaml:"read_keys"`
	// IngestLimit overrides the gateway's default rate limit for this tenant.
	IngestLimit *IngestLimit `yaml:"ingest_limit"`
	// QuotaWebhook receives the tenant's quota notices (pipeline/quota); nil: they are only
	// published on the quota topic.
	QuotaWebhook *QuotaWebhook `yaml:"quota_webhook"`

	loc       *time.Location
	purchased time.Time
	purchases []*Purchase     // every purchase, by day
	apps      map[string]bool // app id → testing
}

// Purchase is one purchase of a plan by a tenant.
type Purchase struct {
	Plan      string    `yaml:"plan"`
	Purchased string    `yaml:"purchased"` // YYYY-MM-DD, a day of the tenant's billing calendar
	Contract  *Contract `yaml:"contract"`  // nil: the plan's figures

	year  int
	month time.Month
	day   int
	field string // where it is written: "" (the tenant's plan) or "plan_history[i]."
}

// Date is the purchase day, a date of the tenant's billing calendar.
func (p *Purchase) Date() (year int, month time.Month, day int) { return p.year, p.month, p.day }

// Field names a field of the purchase as the catalogue writes it, for messages: "plan" for the
// tenant's own purchase, "plan_history[2].plan" for one of its history.
func (p *Purchase) Field(name string) string { return p.field + name }

// Contract holds the overrides agreed with sales; nil fields keep the plan's figures.
type Contract struct {
	IncludedMAU  *int64  `yaml:"included_mau"`
	UnitPriceUSD *string `yaml:"unit_price_usd"`

	unitPrice decimal.Decimal
}

// UnitPrice is the contract's price per MAU, if it sets one.
func (c *Contract) UnitPrice() (decimal.Decimal, bool) {
	if c == nil || c.UnitPriceUSD == nil {
		return decimal.Decimal{}, false
	}
	return c.unitPrice, true
}

// QuotaWebhook is where a tenant's quota notices are delivered: URL receives a signed POST
// (HMAC-SHA256 with the secret read from the environment variable SecretEnv, never written in
// the catalogue).
type QuotaWebhook struct {
	URL       string `yaml:"url"`
	SecretEnv string `yaml:"secret_env"`
}

// Secret is the signing secret, from the environment; "" when unset.
func (w *QuotaWebhook) Secret() string { return os.Getenv(w.SecretEnv) }

func (w *QuotaWebhook) validate() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("quota_webhook.url: %q is not an http(s) URL", w.URL)
	}
	if !envName.MatchString(w.SecretEnv) {
		return fmt.Errorf("quota_webhook.secret_env: %q must name an environment variable ([A-Z_][A-Z0-9_]*) holding the signing secret", w.SecretEnv)
	}
	return nil
}

var envName = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// IngestLimit is a token bucket of events (EventsPerSecond refill, Burst capacity) and a bound
// on the requests in flight, per gateway process.
type IngestLimit struct {
	EventsPerSecond float64 `yaml:"events_per_second"` // 0: no limit
	Burst           int     `yaml:"burst"`             // 0: the gateway's default for the rate
	// MaxInFlight bounds the tenant's requests served at once by one gateway (0: the
	// gateway's --tenant-max-inflight; at most its --max-inflight).
	MaxInFlight int `yaml:"max_inflight"`

	rateSet bool // events_per_second or burst was written in the catalogue
}

// SetsRate reports whether the limit sets the token bucket (events_per_second or burst was
// given, even as 0): an ingest_limit that gives only max_inflight keeps the gateway's default
// rate.
func (l IngestLimit) SetsRate() bool { return l.rateSet || l.EventsPerSecond != 0 || l.Burst != 0 }

// UnmarshalYAML records which fields were written, so that SetsRate can tell an absent
// events_per_second from an explicit 0 (no limit).
func (l *IngestLimit) UnmarshalYAML(n *yaml.Node) error {
	var raw struct {
		EventsPerSecond *float64 `yaml:"events_per_second"`
		Burst           *int     `yaml:"burst"`
		MaxInFlight     int      `yaml:"max_inflight"`
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	*l = IngestLimit{MaxInFlight: raw.MaxInFlight, rateSet: raw.EventsPerSecond != nil || raw.Burst != nil}
	if raw.EventsPerSecond != nil {
		l.EventsPerSecond = *raw.EventsPerSecond
	}
	if raw.Burst != nil {
		l.Burst = *raw.Burst
	}
	return nil
}

// Location is the tenant's billing time zone.
func (t *Tenant) Location() *time.Location { return t.loc }

// PurchasedOn is the purchase day of the tenant's plan, midnight in its billing zone.
func (t *Tenant) PurchasedOn() time.Time { return t.purchased }

// Purchases lists every purchase of the tenant (Plan and PlanHistory), by day. The slice is
// shared: do not modify it.
func (t *Tenant) Purchases() []*Purchase { return t.purchases }

// App reports whether app is one of the tenant's super apps and whether it is a testing app.
func (t *Tenant) App(app string) (known, testing bool) {
	testing, known = t.apps[app]
	return known, testing
}

// Catalog is a validated tenant catalogue.
type Catalog struct {
	Tenants []*Tenant
	// OperatorKeys read every tenant's MAU and invoices: the billing process, support.
	OperatorKeys []*ReadKey
	name         string
	byID         map[string]*Tenant
	keys         *Keyring
	readKeys     *ReadKeyring
}

// Name is the name the catalogue was parsed under (its file), for messages.
func (c *Catalog) Name() string { return c.name }

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

// ReadKeyring holds the read keys of every tenant and the operator keys.
func (c *Catalog) ReadKeyring() *ReadKeyring { return c.readKeys }

// ReadKeys lists the read keys of every tenant, in catalogue order, then the operator keys.
func (c *Catalog) ReadKeys() []*ReadKey {
	var out []*ReadKey
	for _, t := range c.Tenants {
		out = append(out, t.ReadKeys...)
	}
	return append(out, c.OperatorKeys...)
}

// Tenant looks a tenant up by id.
func (c *Catalog) Tenant(id string) (*Tenant, bool) {
	t, ok := c.byID[id]
	return t, ok
}

// Option changes how Parse and Load check a catalogue.
type Option func(*options)

type options struct {
	plans []string
}

// KnownPlans sets the plans a tenant's purchases may name, instead of Plans: the ids of the
// plan catalogue in force (plan.Catalog does this).
func KnownPlans(ids ...string) Option {
	return func(o *options) { o.plans = slices.Clone(ids) }
}

// Load reads and validates the catalogue at path.
func Load(path string, opts ...Option) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenant catalogue: %w", err)
	}
	return Parse(path, data, opts...)
}

var schema = sync.OnceValues(func() (*yamlschema.Schema, error) {
	return yamlschema.Compile("tenants.schema.json", schemas.TenantsSchema)
})

// Parse validates a catalogue: first against its JSON schema, then what a schema cannot say
// (time zones, dates, unique ids, apps and keys, known plans). name is used in error messages.
func Parse(name string, data []byte, opts ...Option) (*Catalog, error) {
	o := options{plans: Plans}
	for _, opt := range opts {
		opt(&o)
	}
	sch, err := schema()
	if err != nil { // the embedded schema is broken: tests catch it
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	raw, err := sch.Check(name, data, func(doc any, v yamlschema.Violation) error { return schemaError(name, doc, v) })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: %s: no tenants (empty document)", ErrInvalid, name)
	}
	var doc struct {
		Tenants      []*Tenant  `yaml:"tenants"`
		OperatorKeys []*ReadKey `yaml:"operator_keys"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a field the schema admits but Tenant lacks is a bug: say so
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	c := &Catalog{Tenants: doc.Tenants, OperatorKeys: doc.OperatorKeys, name: name, byID: make(map[string]*Tenant, len(doc.Tenants))}
	var errs []error
	for _, t := range doc.Tenants {
		where := fmt.Sprintf("%s: tenant %q", name, t.ID)
		if err := t.validate(o.plans); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if _, dup := c.byID[t.ID]; dup {
			errs = append(errs, fmt.Errorf("%s: id: listed twice", where))
			continue
		}
		c.byID[t.ID] = t
	}
	for i, k := range c.OperatorKeys {
		if k == nil {
			errs = append(errs, fmt.Errorf("%s: operator_keys[%d]: empty entry", name, i))
		} else if err := k.validate(nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: operator_keys: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	if err := c.uniqueKeyIDs(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	keys, err := NewKeyring(c.Keys()...)
	if err != nil { // a key id listed under two tenants
		return nil, fmt.Errorf("%w: %s: ingest_keys: %w", ErrInvalid, name, err)
	}
	c.keys = keys
	if c.readKeys, err = NewReadKeyring(c.ReadKeys()...); err != nil { // cannot fail: ids checked above
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	return c, nil
}

// uniqueKeyIDs refuses a key id listed twice anywhere in the catalogue, whatever the kinds: an
// id names one key in logs, metrics and `maumeter keys`, and the same line pasted under two
// fields is a mistake to show, not to guess about.
func (c *Catalog) uniqueKeyIDs() error {
	seen := map[string]string{} // id → where
	var errs []error
	add := func(id, where string) {
		if first, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("%s: %s: key %s listed twice (also under %s)", c.name, where, id, first))
			return
		}
		seen[id] = where
	}
	for _, t := range c.Tenants {
		for _, k := range t.IngestKeys {
			add(k.ID, fmt.Sprintf("tenant %q: ingest_keys", t.ID))
		}
		for _, k := range t.ReadKeys {
			add(k.ID, fmt.Sprintf("tenant %q: read_keys", t.ID))
		}
	}
	for _, k := range c.OperatorKeys {
		add(k.ID, "operator_keys")
	}
	return errors.Join(errs...)
}

// schemaError names the file, the tenant (by id when it has a usable one) and the field.
func schemaError(name string, raw any, v yamlschema.Violation) error {
	return yamlschema.EntryError(name, raw, v, "tenants", "tenant", func(e map[string]any) (string, bool) {
		id := fmt.Sprint(e["id"]) // YAML may read an id as a number
		return id, e["id"] != nil && event.ValidID(id)
	})
}

func (t *Tenant) validate(plans []string) error {
	if !event.ValidID(t.ID) {
		return fmt.Errorf("id: %q must be 1-64 of [A-Za-z0-9._-]", t.ID)
	}
	if t.TimeZone == "" {
		t.TimeZone = "UTC"
	}
	loc, err := time.LoadLocation(t.TimeZone)
	if err != nil {
		return fmt.Errorf("time_zone: %q is not an IANA time zone", t.TimeZone)
	}
	t.loc = loc
	own := &Purchase{Plan: t.Plan, Purchased: t.Purchased, Contract: t.Contract}
	t.purchases = append(make([]*Purchase, 0, 1+len(t.PlanHistory)), own)
	for i, p := range t.PlanHistory {
		if p == nil {
			return fmt.Errorf("plan_history[%d]: empty entry", i)
		}
		p.field = fmt.Sprintf("plan_history[%d].", i)
		t.purchases = append(t.purchases, p)
	}
	days := make(map[string]*Purchase, len(t.purchases))
	for _, p := range t.purchases {
		if err := p.validate(plans); err != nil {
			return err
		}
		if q, dup := days[p.Purchased]; dup {
			other := "the tenant's plan"
			if q.field != "" {
				other = strings.TrimSuffix(q.field, ".")
			}
			return fmt.Errorf("%s: %s is also the day of %s: one purchase a day", p.Field("purchased"), p.Purchased, other)
		}
		days[p.Purchased] = p
	}
	slices.SortFunc(t.purchases, func(a, b *Purchase) int { return strings.Compare(a.Purchased, b.Purchased) })
	t.purchased = time.Date(own.year, own.month, own.day, 0, 0, 0, 0, loc)
	if len(t.Apps) == 0 && len(t.TestingApps) == 0 {
		return errors.New("apps: a tenant needs at least one production or testing app")
	}
	t.apps = make(map[string]bool, len(t.Apps)+len(t.TestingApps))
	for _, field := range []string{"apps", "testing_apps"} {
		list := t.Apps
		if field == "testing_apps" {
			list = t.TestingApps
		}
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
	for i, k := range t.ReadKeys {
		if k == nil {
			return fmt.Errorf("read_keys[%d]: empty entry", i)
		}
		if err := k.validate(t); err != nil {
			return fmt.Errorf("read_keys: %w", err)
		}
	}
	if l := t.IngestLimit; l != nil {
		if l.EventsPerSecond < 0 || l.EventsPerSecond > 1e9 {
			return fmt.Errorf("ingest_limit.events_per_second: %g must be between 0 (no limit) and 1e9", l.EventsPerSecond)
		}
		// A bucket smaller than a batch would refuse full batches forever.
		if l.Burst != 0 && l.Burst < event.MaxBatchEvents {
			return fmt.Errorf("ingest_limit.burst: %d is below one full batch (%d events)", l.Burst, event.MaxBatchEvents)
		}
		if l.MaxInFlight < 0 {
			return fmt.Errorf("ingest_limit.max_inflight: %d must not be negative (0: the gateway's --tenant-max-inflight)", l.MaxInFlight)
		}
	}
	if w := t.QuotaWebhook; w != nil {
		if err := w.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (p *Purchase) validate(plans []string) error {
	if !slices.Contains(plans, p.Plan) {
		return fmt.Errorf("%s: %q is not one of %s", p.Field("plan"), p.Plan, strings.Join(plans, ", "))
	}
	if p.Purchased == "" {
		return fmt.Errorf("%s: required (YYYY-MM-DD)", p.Field("purchased"))
	}
	d, err := time.Parse(time.DateOnly, p.Purchased)
	if err != nil {
		return fmt.Errorf("%s: %q is not a date (YYYY-MM-DD)", p.Field("purchased"), p.Purchased)
	}
	p.year, p.month, p.day = d.Date()
	if c := p.Contract; c != nil {
		if c.IncludedMAU != nil && *c.IncludedMAU < 0 {
			return fmt.Errorf("%s: %d is negative", p.Field("contract.included_mau"), *c.IncludedMAU)
		}
		if c.UnitPriceUSD != nil {
			if !isDecimal(*c.UnitPriceUSD) {
				return fmt.Errorf("%s: %q is not a decimal", p.Field("contract.unit_price_usd"), *c.UnitPriceUSD)
			}
			if c.unitPrice, err = decimal.NewFromString(*c.UnitPriceUSD); err != nil {
				return fmt.Errorf("%s: %q is not a decimal", p.Field("contract.unit_price_usd"), *c.UnitPriceUSD)
			}
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
