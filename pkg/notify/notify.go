// Package notify publishes token-level events (needs re-authorisation, recovered, invalid
// config, credentials or refresh token expiring) to Amazon EventBridge, so operators route them
// to e-mail, Slack or a pager with an ordinary rule on source "token-refresher".
//
// An event carries only what the caller gives it — the token's name, its outcome and a reason —
// and the caller must never pass a secret as the reason.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// Source is the EventBridge "source" of every event; rules match on it.
const Source = "token-refresher"

// Detail types ("detail-type" of the EventBridge event).
const (
	DetailNeedsReauth          = "Token Needs Reauthorisation"
	DetailRecovered            = "Token Recovered"
	DetailInvalidConfig        = "Token Invalid Config"
	DetailCredentialsExpiring  = "Token Credentials Expiring"
	DetailRefreshTokenExpiring = "Refresh Token Expiring"
)

// MaxBatch is the most entries one PutEvents call accepts.
const MaxBatch = 10

// MaxReasonLen bounds the reason in bytes: a reason is a human sentence, and a bounded one
// keeps every batch far below PutEvents' 256 KiB request limit.
const MaxReasonLen = 1024

// maxAttempts bounds how often an entry that EventBridge failed with a retryable code
// (throttling, internal failure) is sent; the SDK already retries whole failed calls.
const maxAttempts = 3

// Event is one token-level notification. Reason is shown to people and must never be a secret.
type Event struct {
	DetailType string
	Token      string
	Outcome    string
	Reason     string
	Time       time.Time // zero = Options.Now()
}

// Detail is the JSON "detail" of every event, exported so that consumers of the events
// (and tests) decode exactly what is sent.
type Detail struct {
	Token   string `json:"token"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
}

// Options configures a Publisher.
type Options struct {
	// EventBusName is the bus to publish to; empty disables publishing (Publish is a no-op).
	EventBusName string
	// Now stamps events whose Time is zero; nil = time.Now.
	Now func() time.Time
	// Logger receives one debug line per published batch; nil = discard.
	Logger *slog.Logger
}

// putEventsAPI is the part of *eventbridge.Client the publisher uses.
type putEventsAPI interface {
	PutEvents(ctx context.Context, params *eventbridge.PutEventsInput, optFns ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
}

// Publisher sends Events to one event bus. A nil *Publisher publishes nothing.
type Publisher struct {
	client putEventsAPI
	bus    string
	now    func() time.Time
	log    *slog.Logger
}

// New returns a Publisher. client may be nil when opts.EventBusName is empty.
func New(client putEventsAPI, opts Options) *Publisher {
	p := &Publisher{client: client, bus: opts.EventBusName, now: opts.Now, log: opts.Logger}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return p
}

// Enabled reports whether Publish sends anything.
func (p *Publisher) Enabled() bool {
	return p != nil && p.bus != "" && p.client != nil
}

// ErrInvalidEvent is wrapped by Publish when an event is malformed; nothing is sent then.
var ErrInvalidEvent = errors.New("notify: invalid event")

// FailedEntry is one event EventBridge did not accept.
type FailedEntry struct {
	Token      string
	DetailType string
	Code       string // EventBridge's ErrorCode, e.g. ThrottlingException
	Message    string // EventBridge's ErrorMessage
}

// FailedEntriesError is returned when EventBridge rejected some entries (FailedEntryCount > 0)
// after the retries; the other events were published.
type FailedEntriesError struct {
	Total   int
	Entries []FailedEntry
}

func (e *FailedEntriesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "notify: %d of %d events not published", len(e.Entries), e.Total)
	for i, f := range e.Entries {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Entries)-i)
			break
		}
		fmt.Fprintf(&b, "; %s (%s): %s: %s", f.Token, f.DetailType, f.Code, f.Message)
	}
	return b.String()
}

// Publish sends events in batches of MaxBatch. Malformed events are reported before anything
// is sent. Entries that EventBridge fails with a retryable code are resent (up to 3 sends in
// all); the rest are reported in a *FailedEntriesError. A failed call is joined into the error
// and the remaining batches are still attempted: one bad batch must not hide the others' events.
func (p *Publisher) Publish(ctx context.Context, events ...Event) error {
	if !p.Enabled() || len(events) == 0 {
		return nil
	}
	entries := make([]pending, 0, len(events))
	for i, ev := range events {
		e, err := p.entry(ev)
		if err != nil {
			return fmt.Errorf("%w: event %d: %w", ErrInvalidEvent, i, err)
		}
		entries = append(entries, pending{ev: ev, entry: e})
	}

	var callErrs []error
	failed := &FailedEntriesError{Total: len(events)}
	for start := 0; start < len(entries); start += MaxBatch {
		batch := entries[start:min(start+MaxBatch, len(entries))]
		for attempt := 1; len(batch) > 0; attempt++ {
			refused, err := p.send(ctx, batch)
			if err != nil {
				callErrs = append(callErrs, err)
				break
			}
			// A retryable refusal is resent while attempts remain; the rest are reported.
			var retry []pending
			for _, r := range refused {
				if attempt < maxAttempts && retryable(r.code) {
					retry = append(retry, r.pending)
					continue
				}
				failed.Entries = append(failed.Entries, FailedEntry{
					Token: r.ev.Token, DetailType: r.ev.DetailType, Code: r.code, Message: r.message,
				})
			}
			batch = retry
		}
	}
	if len(failed.Entries) > 0 {
		callErrs = append(callErrs, failed)
	}
	return errors.Join(callErrs...)
}

type pending struct {
	ev    Event
	entry types.PutEventsRequestEntry
}

// refusal is an entry EventBridge did not accept, with its error code and message.
type refusal struct {
	pending
	code, message string
}

// send puts one batch and returns the entries EventBridge refused, in batch order.
func (p *Publisher) send(ctx context.Context, batch []pending) ([]refusal, error) {
	in := &eventbridge.PutEventsInput{Entries: make([]types.PutEventsRequestEntry, len(batch))}
	for i, b := range batch {
		in.Entries[i] = b.entry
	}
	out, err := p.client.PutEvents(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("notify: put %d events on %s: %w", len(batch), p.bus, err)
	}
	if out.FailedEntryCount == 0 {
		p.log.DebugContext(ctx, "notify: published", "events", len(batch), "bus", p.bus)
		return nil, nil
	}
	if len(out.Entries) != len(batch) {
		// The result entries are positional; without them we cannot tell which failed.
		return nil, fmt.Errorf("notify: put %d events on %s: %d failed, but %d result entries came back",
			len(batch), p.bus, out.FailedEntryCount, len(out.Entries))
	}
	var refused []refusal
	for i, r := range out.Entries {
		if code := aws.ToString(r.ErrorCode); code != "" {
			refused = append(refused, refusal{pending: batch[i], code: code, message: aws.ToString(r.ErrorMessage)})
		}
	}
	p.log.DebugContext(ctx, "notify: published", "events", len(batch)-int(out.FailedEntryCount),
		"failed", out.FailedEntryCount, "bus", p.bus)
	return refused, nil
}

// retryable lists the PutEvents entry error codes that a resend can cure.
func retryable(code string) bool {
	switch code {
	case "ThrottlingException", "InternalFailure", "InternalException", "ServiceUnavailable":
		return true
	}
	return false
}

// entry validates ev and builds its PutEvents entry.
func (p *Publisher) entry(ev Event) (types.PutEventsRequestEntry, error) {
	switch ev.DetailType {
	case DetailNeedsReauth, DetailRecovered, DetailInvalidConfig, DetailCredentialsExpiring, DetailRefreshTokenExpiring:
	case "":
		return types.PutEventsRequestEntry{}, errors.New("field DetailType is empty")
	default:
		return types.PutEventsRequestEntry{}, fmt.Errorf("field DetailType %q is not one of the notify.Detail* constants", ev.DetailType)
	}
	if !invocation.ValidName(ev.Token) {
		// The value is not echoed: an invalid "name" may be anything, including a pasted secret.
		return types.PutEventsRequestEntry{}, fmt.Errorf("field Token is not a valid token name (%d bytes)", len(ev.Token))
	}
	if ev.Outcome == "" {
		return types.PutEventsRequestEntry{}, errors.New("field Outcome is empty")
	}
	detail, err := json.Marshal(Detail{Token: ev.Token, Outcome: ev.Outcome, Reason: truncate(ev.Reason, MaxReasonLen)})
	if err != nil {
		return types.PutEventsRequestEntry{}, fmt.Errorf("detail: %w", err)
	}
	t := ev.Time
	if t.IsZero() {
		t = p.now()
	}
	return types.PutEventsRequestEntry{
		Source:       aws.String(Source),
		DetailType:   aws.String(ev.DetailType),
		Detail:       aws.String(string(detail)),
		EventBusName: aws.String(p.bus),
		Time:         aws.Time(t),
	}, nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
