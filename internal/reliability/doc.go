// Package reliability holds the tests that prove the refresh protocol (docs/design.md §4) under
// concurrency, crashes, lost responses and AWS faults: real bootstrap processes driven
// through the Lambda runtime emulator, moto behind a fault proxy, and the seed-provider
// simulators. `make test` runs a short form of each; `make soak` (TR_SOAK=1) the full trial
// counts. There is no non-test code here.
package reliability
