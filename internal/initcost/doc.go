// Package initcost measures what the refresher's bootstrap costs at start-up against a
// hello-world Lambda function with the same AWS clients (testdata/hello): time from process
// start to its first request for an event (GET …/invocation/next), and binary size. The
// figures are a benchmark (`make bench`); the test only checks that init makes no network
// call and reaches the Runtime API.
package initcost
