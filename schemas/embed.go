// Package schemas exposes the project's schemas to Go: the ClickHouse migrations applied by
// `maumeter migrate`, the event schema, the OpenAPI document and the JSON schemas of the two YAML
// catalogues. The files themselves are the documentation.
package schemas

import "embed"

// ClickHouseMigrations holds clickhouse/NNN_name.sql, applied in order by goose.
//
//go:embed clickhouse/*.sql
var ClickHouseMigrations embed.FS

// ClickHouseDir is the directory of the migrations inside ClickHouseMigrations.
const ClickHouseDir = "clickhouse"

// OpenAPI is the OpenAPI document of the HTTP API.
//
//go:embed openapi.yaml
var OpenAPI []byte

// TenantsSchema is the JSON schema (draft 2020-12) of the tenant catalogue, tenants.yaml.
//
//go:embed catalog/tenants.schema.json
var TenantsSchema []byte

// PlansSchema is the JSON schema (draft 2020-12) of the plan catalogue, plans.yaml.
//
//go:embed catalog/plans.schema.json
var PlansSchema []byte
