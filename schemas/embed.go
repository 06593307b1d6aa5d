// Package schemas exposes the project's schemas to Go: the ClickHouse migrations applied by
// `maumeter migrate`, and the event schema. The files themselves are the documentation.
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
