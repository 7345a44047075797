// Package consumertest runs the consumer readers of other languages (consumers/node) against
// moto from go test, so `make test` proves the consumer contract of docs/design.md §6 beyond Go.
// Without node the test is skipped locally and fails under CI=true.
package consumertest
