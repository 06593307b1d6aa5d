// Package plan is the plan catalogue (plans.yaml: the platform's plans with every figure of its
// billing overview, and how long a purchase is valid) and the pricing of a tenant-month with
// exact decimals (price.go): which of the purchases in force prices a month (select.go; the
// rules and why: docs/BILLING.md), included MAU, overage, contract overrides, entitlements;
// and the POC caps of each day (cap.go). The default catalogue is embedded (plans.yaml beside this
// file, equal to the overview); LoadCatalog replaces it with a file. Catalogues are checked
// against schemas/catalog/plans.schema.json and then by Go; every error names the file, the
// plan and the field. The package does no I/O beyond reading that file and keeps nothing
// mutable: a *Catalog is safe for concurrent use.
package plan

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/pkg/tenant"
	"github.com/maumeter/maumeter/pkg/yamlschema"
	"github.com/maumeter/maumeter/schemas"
)

// ErrInvalid wraps every validation error of a plan catalogue.
var ErrInvalid = errors.New("invalid plan catalogue")

// DefaultYAML is the embedded plan catalogue: the plans of the billing overview.
//
//go:embed plans.yaml
var DefaultYAML []byte

// DefaultName names the embedded catalogue in messages.
const DefaultName = "plans.yaml (embedded)"

// The values of Validity.LeapDayAnniversary.
const (
	LeapDayFeb28 = "feb28"
	LeapDayMar1  = "mar1"
)

// Validity says how long a purchase is in force: from its day to the same day of the next year.
type Validity struct {
	// AnniversaryIncluded: the anniversary itself is still in force.
	AnniversaryIncluded bool `yaml:"anniversary_included"`
	// LeapDayAnniversary is the anniversary of a February 29 purchase: LeapDayFeb28 or LeapDayMar1.
	LeapDayAnniversary string `yaml:"leap_day_anniversary"`
}

// Plan is one plan of the catalogue.
type Plan struct {
	ID                   string `yaml:"id"`   // what tenants.yaml calls it
	Name                 string `yaml:"name"` // as the overview writes it
	Official             bool   `yaml:"official"`
	SuperApps            int    `yaml:"super_apps"` // production super apps
	TestingSuperApps     int    `yaml:"testing_super_apps"`
	MiniProgramsCreated  int    `yaml:"mini_programs_created"`
	MiniProgramsReleased int    `yaml:"mini_programs_released"`
	IncludedMAU          int64  `yaml:"included_mau"`
	// HardCap: IncludedMAU caps the MAU of all the tenant's apps; MAU above it is flagged
	// poc_cap_exceeded, never charged. Exactly one of HardCap and PayAsYouGo holds.
	HardCap bool `yaml:"hard_cap"`
	// PayAsYouGo: MAU above IncludedMAU is charged at UnitPrice.
	PayAsYouGo   bool   `yaml:"pay_as_you_go"`
	UnitPriceUSD string `yaml:"unit_price_usd"` // as written; "" without pay-as-you-go

	// UnitPrice is UnitPriceUSD: USD per MAU per month above IncludedMAU; zero without
	// pay-as-you-go.
	UnitPrice decimal.Decimal `yaml:"-"`
}

// Catalog is a validated plan catalogue. Do not modify it.
type Catalog struct {
	Validity Validity `yaml:"validity"`
	Plans    []*Plan  `yaml:"plans"`

	name string
	byID map[string]*Plan
}

// Name is the name the catalogue was parsed under (its file), for messages.
func (c *Catalog) Name() string { return c.name }

// Plan looks a plan up by id.
func (c *Catalog) Plan(id string) (*Plan, bool) {
	p, ok := c.byID[id]
	return p, ok
}

// IDs lists the plan ids in catalogue order.
func (c *Catalog) IDs() []string {
	ids := make([]string, len(c.Plans))
	for i, p := range c.Plans {
		ids[i] = p.ID
	}
	return ids
}

var defaultCatalog = sync.OnceValues(func() (*Catalog, error) { return ParseCatalog(DefaultName, DefaultYAML) })

// Default is the embedded catalogue, parsed once. Its error is never nil only if the embedded
// file is broken, which the package's tests prevent.
func Default() (*Catalog, error) { return defaultCatalog() }

// LoadCatalog reads and validates the plan catalogue at path; "" is the embedded default.
func LoadCatalog(path string) (*Catalog, error) {
	if path == "" {
		return Default()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plan catalogue: %w", err)
	}
	return ParseCatalog(path, data)
}

var schema = sync.OnceValues(func() (*yamlschema.Schema, error) {
	return yamlschema.Compile("plans.schema.json", schemas.PlansSchema)
})

// ParseCatalog validates a plan catalogue: against its JSON schema, then unique ids and exact
// prices. name is used in error messages.
func ParseCatalog(name string, data []byte) (*Catalog, error) {
	sch, err := schema()
	if err != nil { // the embedded schema is broken: tests catch it
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	raw, err := sch.Check(name, data, func(doc any, v yamlschema.Violation) error { return schemaError(name, doc, v) })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: %s: no plans (empty document)", ErrInvalid, name)
	}
	c := &Catalog{name: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a field the schema admits but Plan lacks is a bug: say so
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	c.byID = make(map[string]*Plan, len(c.Plans))
	var errs []error
	for _, p := range c.Plans {
		where := fmt.Sprintf("%s: plan %q", name, p.ID)
		if _, dup := c.byID[p.ID]; dup {
			errs = append(errs, fmt.Errorf("%s: id: listed twice", where))
			continue
		}
		c.byID[p.ID] = p
		p.UnitPrice = decimal.Zero
		if p.PayAsYouGo {
			if p.UnitPrice, err = decimal.NewFromString(p.UnitPriceUSD); err != nil {
				errs = append(errs, fmt.Errorf("%s: unit_price_usd: %q is not a decimal", where, p.UnitPriceUSD))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return c, nil
}

// schemaError names the file, the plan (by id when it has one) and the field.
func schemaError(name string, raw any, v yamlschema.Violation) error {
	return yamlschema.EntryError(name, raw, v, "plans", "plan", func(e map[string]any) (string, bool) {
		id, ok := e["id"].(string)
		return id, ok && id != ""
	})
}

// CheckTenants checks a tenant catalogue against c: every purchase names a plan of c, and a
// contract sets a unit price only on a plan with pay-as-you-go. The errors wrap
// tenant.ErrInvalid and name the tenant file, the tenant and the field.
func (c *Catalog) CheckTenants(tc *tenant.Catalog) error {
	var errs []error
	for _, t := range tc.Tenants {
		for _, pu := range t.Purchases() {
			where := fmt.Sprintf("%s: tenant %q", tc.Name(), t.ID)
			p, ok := c.Plan(pu.Plan)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: %s: %q is not a plan of %s (%s)",
					where, pu.Field("plan"), pu.Plan, c.name, strings.Join(c.IDs(), ", ")))
				continue
			}
			if _, set := pu.Contract.UnitPrice(); set && !p.PayAsYouGo {
				errs = append(errs, fmt.Errorf("%s: %s: the %s plan has no pay-as-you-go, so no unit price",
					where, pu.Field("contract.unit_price_usd"), p.ID))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", tenant.ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// LoadTenants loads the tenant catalogue at path (tenant.Load) with c's plans and checks it
// against c (CheckTenants).
func (c *Catalog) LoadTenants(path string) (*tenant.Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenant catalogue: %w", err)
	}
	return c.ParseTenants(path, data)
}

// ParseTenants parses a tenant catalogue (tenant.Parse) with c's plans and checks it against c
// (CheckTenants).
func (c *Catalog) ParseTenants(name string, data []byte) (*tenant.Catalog, error) {
	tc, err := tenant.Parse(name, data, tenant.KnownPlans(c.IDs()...))
	if err != nil {
		return nil, err
	}
	if err := c.CheckTenants(tc); err != nil {
		return nil, err
	}
	return tc, nil
}
