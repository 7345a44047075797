// Package deploy holds no code: its tests check the deployment files at the
// repository root (template.yaml, samconfig.toml, events/) as written and as
// deployed (after SAM's transform, through cfn-lint's loader): least-privilege
// policies evaluated by a small IAM model, the private secrets' resource policy,
// the KMS option, the escrow key's policy, the state table's resource policy, the
// state table against pkg/ledger (in moto), the schedules (one parameter, the interval derived),
// retries and failure queue, the alarms, the token-event rule (through moto's
// EventBridge) and the dashboard — so a template edit that weakens one of them
// fails `go test`.
package deploy
