package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// documentView is a private document for people: secrets are token.Secret, whose JSON is
// "[redacted]"; unknown fields are named, not shown (they may hold anything).
type documentView struct {
	Provider         providerView `json:"provider"`
	Policy           *policyView  `json:"policy,omitempty"`
	RefreshToken     token.Secret `json:"refresh_token,omitempty"`
	RefreshExpiresAt string       `json:"refresh_expires_at,omitempty"`
	AccessToken      token.Secret `json:"access_token,omitempty"`
	TokenType        string       `json:"token_type,omitempty"`
	ExpiresAt        string       `json:"expires_at,omitempty"`
	Scope            string       `json:"scope,omitempty"`
	Generation       int64        `json:"generation"`
	Status           string       `json:"status"`
	StatusReason     string       `json:"status_reason,omitempty"`
	AuthorizedAt     string       `json:"authorized_at,omitempty"`
	UnknownFields    []string     `json:"unknown_fields,omitempty"`
	Quota            *quotaView   `json:"effective_quota,omitempty"`
}

type providerView struct {
	Grant               string       `json:"grant,omitempty"`
	Body                string       `json:"body,omitempty"`
	TokenURL            string       `json:"token_url,omitempty"`
	AuthorizeURL        string       `json:"authorize_url,omitempty"`
	ClientID            string       `json:"client_id,omitempty"`
	ClientSecret        token.Secret `json:"client_secret,omitempty"`
	ClientAuth          string       `json:"client_auth,omitempty"`
	Scope               string       `json:"scope,omitempty"`
	EntityID            string       `json:"entity_id,omitempty"`
	EntitySecret        token.Secret `json:"entity_secret,omitempty"`
	CredentialsExpireAt string       `json:"credentials_expire_at,omitempty"`
	ReuseGrace          string       `json:"reuse_grace,omitempty"`
	DefaultExpiresIn    string       `json:"default_expires_in,omitempty"`
}

type policyView struct {
	RefreshMargin string `json:"refresh_margin,omitempty"`
	QuotaKey      string `json:"quota_key,omitempty"`
	DailyLimit    int    `json:"daily_limit,omitempty"`
	QuotaTimezone string `json:"quota_timezone,omitempty"`
}

type quotaView struct {
	Key        string `json:"key"`
	DailyLimit int    `json:"daily_limit"`
	Timezone   string `json:"timezone"`
}

func viewTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// viewTimeExact keeps fractions of a second: authorized_at is compared exactly.
func viewTimeExact(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func viewDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func newDocumentView(p *token.Private) documentView {
	v := p.Provider
	d := documentView{
		Provider: providerView{
			Grant: v.Grant, Body: v.Body, TokenURL: v.TokenURL, AuthorizeURL: v.AuthorizeURL, ClientID: v.ClientID, ClientSecret: v.ClientSecret,
			ClientAuth: v.ClientAuth, Scope: v.Scope, EntityID: v.EntityID, EntitySecret: v.EntitySecret,
			CredentialsExpireAt: viewTime(v.CredentialsExpireAt), ReuseGrace: viewDuration(v.ReuseGrace),
			DefaultExpiresIn: viewDuration(v.DefaultExpiresIn),
		},
		RefreshToken:     p.RefreshToken,
		RefreshExpiresAt: viewTime(p.RefreshExpiresAt),
		AccessToken:      p.AccessToken,
		TokenType:        p.TokenType,
		ExpiresAt:        viewTime(p.ExpiresAt),
		Scope:            p.Scope,
		Generation:       p.Generation,
		Status:           p.Status,
		StatusReason:     p.StatusReason,
		AuthorizedAt:     viewTimeExact(p.AuthorizedAt),
		UnknownFields:    unknownFields(p),
	}
	if pol := (policyView{viewDuration(p.Policy.RefreshMargin), p.Policy.QuotaKey, p.Policy.DailyLimit, p.Policy.QuotaTimezone}); pol != (policyView{}) {
		d.Policy = &pol
	}
	if q, ok := p.Quota(); ok {
		d.Quota = &quotaView{Key: q.Key, DailyLimit: q.Limit, Timezone: q.Location.String()}
	}
	return d
}

// unknownFields names the fields token.Private keeps without knowing them, at the top
// level and inside provider and policy. token.Private does not expose nested ones, so
// this clears every known (exported) field of a copy and reads the names Marshal still
// writes: what is left is unknown. Marshal always writes generation and status.
func unknownFields(p *token.Private) []string {
	c := p.Clone()
	zeroExported(reflect.ValueOf(&c.Provider).Elem())
	zeroExported(reflect.ValueOf(&c.Policy).Elem())
	top := reflect.ValueOf(c).Elem()
	for i := 0; i < top.NumField(); i++ {
		f := top.Field(i)
		if top.Type().Field(i).IsExported() && f.Type() != reflect.TypeOf(c.Provider) && f.Type() != reflect.TypeOf(c.Policy) {
			f.SetZero()
		}
	}
	raw, err := c.Marshal()
	if err != nil {
		return nil
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(raw, &doc) != nil {
		return nil
	}
	var names []string
	for k, v := range doc {
		switch k {
		case "generation", "status":
		case "provider", "policy":
			var inner map[string]json.RawMessage
			_ = json.Unmarshal(v, &inner)
			for ik := range inner {
				names = append(names, k+"."+ik)
			}
		default:
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names
}

func zeroExported(v reflect.Value) {
	for i := 0; i < v.NumField(); i++ {
		if v.Type().Field(i).IsExported() {
			v.Field(i).SetZero()
		}
	}
}

type versionView struct {
	ID      string    `json:"id"`
	Stages  []string  `json:"stages"`
	Created time.Time `json:"created"`
	Ledger  string    `json:"ledger,omitempty"` // what the state table's record says of this version
}

type recordView struct {
	VersionID  string        `json:"version_id"`
	Generation int64         `json:"generation"`
	Status     string        `json:"status"`
	Inflight   *inflightView `json:"inflight,omitempty"`
}

type showOutput struct {
	Name           string        `json:"name"`
	Secret         string        `json:"secret"`
	CurrentVersion string        `json:"current_version"`
	Document       *documentView `json:"document,omitempty"`
	DocumentError  string        `json:"document_error,omitempty"`
	Record         *recordView   `json:"record,omitempty"`
	Versions       []versionView `json:"versions"`
}

// show prints the private document with every secret redacted, its versions and stages,
// and, with a state table, which version the token record points at.
func (a *app) show(ctx context.Context, args []string) int {
	fs := a.flagSet("show")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, code, ok := parse(fs, args, "show NAME [--json]")
	if !ok {
		return code
	}
	if len(pos) != 1 {
		a.errorf("show", "want one token NAME, got %d arguments", len(pos))
		return exitUsage
	}
	name := pos[0]
	secret := a.privateName(name)
	store, err := a.store(ctx)
	if err != nil {
		a.errorf("show", "%s", a.explainAWS(err, a.secretResource(secret)))
		return exitFail
	}
	cur, err := store.GetCurrent(ctx, secret)
	if errors.Is(err, secretstore.ErrNotFound) {
		a.errorf("show", "%s: no private secret %s", name, secret)
		return exitNotFound
	}
	if err != nil {
		a.errorf("show", "%s: %s", name, a.explainAWS(err, a.secretResource(secret)))
		return exitFail
	}
	versions, err := store.Versions(ctx, secret)
	if err != nil {
		a.errorf("show", "%s: %s", name, a.explainAWS(err, a.secretResource(secret)))
		return exitFail
	}
	out := showOutput{Name: name, Secret: secret, CurrentVersion: cur.ID}
	p, perr := token.ParsePrivate([]byte(cur.Value.Reveal()))
	if perr == nil {
		v := newDocumentView(p)
		out.Document = &v
		if verr := p.Validate(); verr != nil {
			out.DocumentError = verr.Error()
		}
	} else {
		out.DocumentError = perr.Error()
	}
	marks := map[string]string{}
	if a.opts.table != "" {
		led, err := a.ledger(ctx)
		if err == nil {
			var rec ledger.Record
			rec, err = led.Get(ctx, name)
			if err == nil {
				out.Record = &recordView{VersionID: rec.VersionID, Generation: rec.Generation, Status: rec.Status, Inflight: newInflightView(rec.Inflight)}
				marks = versionMarks(rec)
			}
		}
		if errors.Is(err, ledger.ErrNotFound) {
			fmt.Fprintf(a.stderr, "tokenctl show: %s: no token record yet (the refresher adopts the secret on its next run)\n", name)
		} else if err != nil {
			fmt.Fprintf(a.stderr, "tokenctl show: warning: token record: %s\n", a.explainAWS(err, a.tableResource()))
		}
	}
	for _, v := range versions {
		stages := v.Stages
		if stages == nil {
			stages = []string{}
		}
		out.Versions = append(out.Versions, versionView{ID: v.ID, Stages: stages, Created: v.Created.UTC(), Ledger: marks[v.ID]})
	}
	sortVersions(out.Versions)

	if *asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			a.errorf("show", "%v", err)
			return exitFail
		}
	} else {
		a.writeShow(out)
	}
	if out.DocumentError != "" {
		a.errorf("show", "%s: the current version is not a valid private document: %s", name, out.DocumentError)
		return exitInvalid
	}
	return exitOK
}

// sortVersions puts the newest first. Creation dates can tie (Secrets Manager reports
// them to the second), so ties go by stage: AWSCURRENT, other labels, AWSPREVIOUS, none.
func sortVersions(vs []versionView) {
	rank := func(v versionView) int {
		switch {
		case slices.Contains(v.Stages, secretstore.StageCurrent):
			return 0
		case slices.Contains(v.Stages, "AWSPREVIOUS"):
			return 2
		case len(v.Stages) > 0:
			return 1
		}
		return 3
	}
	sort.SliceStable(vs, func(i, j int) bool {
		if !vs[i].Created.Equal(vs[j].Created) {
			return vs[i].Created.After(vs[j].Created)
		}
		return rank(vs[i]) < rank(vs[j])
	})
}

// versionMarks says which versions the token record names.
func versionMarks(r ledger.Record) map[string]string {
	m := map[string]string{}
	add := func(id, mark string) {
		if id == "" {
			return
		}
		if m[id] != "" {
			m[id] += ", "
		}
		m[id] += mark
	}
	add(r.VersionID, fmt.Sprintf("committed (generation %d)", r.Generation))
	add(r.PrevVersionID, "previous")
	if r.Inflight != nil {
		add(r.Inflight.From, "inflight from")
		add(r.Inflight.To, "inflight to")
	}
	return m
}

func (a *app) writeShow(out showOutput) {
	fmt.Fprintf(a.stdout, "secret:  %s\ncurrent: %s\n", out.Secret, out.CurrentVersion)
	if out.Record != nil {
		fmt.Fprintf(a.stdout, "record:  version %s, generation %d, status %s\n", out.Record.VersionID, out.Record.Generation, out.Record.Status)
		if in := out.Record.Inflight; in != nil {
			fmt.Fprintf(a.stdout, "inflight: %s -> %s since %s\n", dash(in.From), in.To, formatTime(in.StartedAt))
			if in.PresentedAt != nil {
				fmt.Fprintf(a.stdout, "presented: the refresh token went to the provider at %s; a recovery presents it again only inside the provider's reuse grace\n", formatTime(*in.PresentedAt))
			}
			if note := in.escrowNote(); note != "" {
				fmt.Fprintf(a.stdout, "escrow:  refresh token %s (Secrets Manager refused it; the next run stores it as version %s; until then this record holds the only copy)\n", note, in.To)
			}
		}
	}
	if out.Document != nil {
		doc, err := json.MarshalIndent(out.Document, "", "  ")
		if err == nil {
			fmt.Fprintf(a.stdout, "document:\n%s\n", doc)
		}
	}
	fmt.Fprintln(a.stdout, "versions:")
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VERSION\tSTAGES\tCREATED\tRECORD")
	for _, v := range out.Versions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", v.ID, dash(strings.Join(v.Stages, ",")), formatTime(v.Created), dash(v.Ledger))
	}
	_ = tw.Flush()
}
