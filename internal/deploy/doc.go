// Package deploy holds no code: its tests check the deployment files at the
// repository root (template.yaml, samconfig.toml, events/) against the design's
// §6 — least-privilege policies, the state table's settings, the schedule and
// the alarms — so a template edit that weakens one of them fails `go test`.
package deploy
