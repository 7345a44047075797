package faultproxy_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
)

// TestWriteLimit: past PerSecond writes in a second the proxy answers what
// Secrets Manager answers (400 ThrottlingException, which the SDK decodes and
// pkg/secretstore reports as ErrThrottled) without forwarding; reads and other
// services pass; the window slides; the counts say what happened.
func TestWriteLimit(t *testing.T) {
	r := newRig(t, 1) // no SDK retry: every answer is seen
	ctx := context.Background()
	clock := providersim.NewClock(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC))
	name := uniq(t, "secret")
	r.createSecret(t, name, "v0")
	other := uniq(t, "secret")
	r.createSecret(t, other, "w0")
	r.p.LimitWrites(faultproxy.WriteLimit{PerSecond: 3, Now: clock.Now})

	// Each of the three write operations counts toward the one limit.
	seq := 0
	put := func() (string, error) {
		seq++
		token := fmt.Sprintf("00000000-0000-4000-8000-%012d", seq)
		return token, r.putSecret(ctx, name, token, fmt.Sprint("v", seq))
	}
	if _, err := put(); err != nil {
		t.Fatalf("write 1 (PutSecretValue): %v", err)
	}
	if _, err := r.sm.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{SecretId: aws.String(other), Description: aws.String("d")}); err != nil {
		t.Fatalf("write 2 (UpdateSecret): %v", err)
	}
	if _, err := r.sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(name), VersionStage: aws.String("TR_OTHER"), MoveToVersionId: aws.String(fmt.Sprintf("00000000-0000-4000-8000-%012d", 1)),
	}); err != nil {
		t.Fatalf("write 3 (UpdateSecretVersionStage): %v", err)
	}

	clock.Advance(500 * time.Millisecond)
	token, err := put()
	if !isCode(err, "ThrottlingException") {
		t.Fatalf("write 4 err = %v, want ThrottlingException", err)
	}
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest {
		t.Errorf("write 4 err = %v, want HTTP 400", err)
	}
	if v := r.directVersion(t, name, token); v != "" {
		t.Errorf("throttled write reached moto")
	}
	// What the adapter makes of it: a throttle, not a conflict or a missing secret.
	store := secretstore.New(r.sm)
	if err := store.PutCurrentVersion(ctx, name, "v5", "00000000-0000-4000-8000-000000000099"); !errors.Is(err, secretstore.ErrThrottled) {
		t.Errorf("secretstore err = %v, want ErrThrottled", err)
	}
	// Reads and other services are not limited.
	if _, err := r.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)}); err != nil {
		t.Errorf("read while writes are throttled: %v", err)
	}
	if err := r.putItem(ctx, "a", "1"); err != nil {
		t.Errorf("DynamoDB write while Secrets Manager writes are throttled: %v", err)
	}

	// The first three leave the trailing second at t0+1s; throttled ones never entered it.
	clock.Advance(500 * time.Millisecond)
	for i := range 3 {
		if _, err := put(); err != nil {
			t.Fatalf("write %d in the next second: %v", i+1, err)
		}
	}
	if _, err := put(); !isCode(err, "ThrottlingException") {
		t.Fatalf("4th write in the next second err = %v, want ThrottlingException", err)
	}

	got := r.p.WriteStats()
	want := faultproxy.WriteStats{Admitted: 6, Throttled: 3, Seconds: []faultproxy.WriteSecond{
		{Admitted: 3, Throttled: 2}, {Admitted: 3, Throttled: 1},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("WriteStats = %+v, want %+v", got, want)
	}
	if got.PeakAdmitted() != 3 {
		t.Errorf("PeakAdmitted = %d, want 3", got.PeakAdmitted())
	}
	if n := countActions(r.p.Events(), opPutSecret, faultproxy.Error); n != 3 {
		t.Errorf("PutSecretValue events answered with an error = %d, want 3", n)
	}
}

func countActions(events []faultproxy.Event, op string, a faultproxy.Action) int {
	n := 0
	for _, e := range events {
		if e.Op == op && e.Action == a {
			n++
		}
	}
	return n
}

// TestWriteLimitDefaultsAndRemove: the zero WriteLimit is 50 writes/s over
// the Secrets Manager writes; lifting it forwards everything again; a scripted
// fault answers before the limit counts.
func TestWriteLimitDefaultsAndRemove(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()
	clock := providersim.NewClock(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC))
	name := uniq(t, "secret")
	r.createSecret(t, name, "v0")
	lift := r.p.LimitWrites(faultproxy.WriteLimit{Now: clock.Now})
	remove := r.p.Add(faultproxy.Rule{Op: opPutSecret, Times: 1, Error: faultproxy.InternalServiceError()})

	tests := []struct {
		name string
		want string // "" success, else the error code
	}{{name: "scripted fault first", want: "InternalServiceError"}}
	for i := range faultproxy.DefaultWritesPerSecond {
		tests = append(tests, struct{ name, want string }{name: fmt.Sprintf("write %d", i+1)})
	}
	tests = append(tests, struct{ name, want string }{name: "write 51", want: "ThrottlingException"})
	for i, tc := range tests {
		err := r.putSecret(ctx, name, fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "v")
		if tc.want == "" && err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.want != "" && !isCode(err, tc.want) {
			t.Fatalf("%s: err = %v, want %s", tc.name, err, tc.want)
		}
	}
	remove()
	lift()
	if err := r.putSecret(ctx, name, "00000000-0000-4000-8000-999999999999", "v"); err != nil {
		t.Fatalf("write after the limit was lifted: %v", err)
	}
	if got, want := r.p.WriteStats(), (faultproxy.WriteStats{Admitted: 50, Throttled: 1, Seconds: []faultproxy.WriteSecond{{Admitted: 50, Throttled: 1}}}); !reflect.DeepEqual(got, want) {
		t.Errorf("WriteStats = %+v, want %+v", got, want)
	}
}
