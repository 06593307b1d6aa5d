// Package pipeline holds the stages that move data, in data-flow order, and their adapters:
//
//	SDKs ──HTTP──▶ ingest ──Kafka mau.events.v1──▶ count ──▶ ClickHouse mau_devices ──▶ api (MAU reads)
//	                ▲                               ├─ close ──Kafka mau.rollups.v1──▶ rate ──▶ ClickHouse invoices ──▶ api (invoices)
//	                │                               └─ caps.Publisher ──Kafka mau.caps.v1──┐ (POC caps)
//	                └── caps.State (gateway, from memory) ◀────────────────────────────────┘
//
// To change…                               read…
//   - what an event may contain            pkg/event (contract, validation, wire encoding)
//   - how a request is validated/answered  pipeline/ingest
//   - how devices are counted, crash safety pipeline/count (and docs/ARCHITECTURE.md, "Counting")
//   - month close, rollups, restatements   pipeline/count (closer.go)
//   - parked events, the DLQ, catalogue reload pipeline/count (park.go), cmd/maumeter (dlq.go)
//   - POC caps (publisher, gateway state)  pipeline/caps (and docs/ARCHITECTURE.md, "POC caps")
//   - pricing a month, invoices, evidence  pkg/plan, pipeline/rate
//   - adjustments, billing order, bills    pipeline/rate (invoice.go Adjust, bill.go), pipeline/chstore (billing.go)
//   - quota, cost to date, projection      pipeline/api (billing, projection), pkg/plan (project.go, curve.go, backtest_test.go)
//   - Kafka topics, producer, lag, kfake   pipeline/bus (topics.go: retention check; EventsBalancer: murmur2)
//   - lost offsets, accept-loss            pipeline/count (count.go startOffset, awaitAccepted), cmd/maumeter (offsets.go)
//   - Kafka TLS and SASL (bus.Net)         pipeline/bus (net.go), internal/secure (TLS files, secrets)
//   - ClickHouse tables and queries        schemas/clickhouse, pipeline/chstore
//   - HTTP routes                          pipeline/api, schemas/openapi.yaml
//   - who may read (read, operator keys)   pipeline/api (auth.go), pkg/tenant (keys.go)
//   - generated traffic (demo, loadgen)    pipeline/loadgen, pkg/population (returning devices)
//
// Nothing here is imported by pkg/: pkg is pure domain code with no I/O.
package pipeline
