package providersim

import (
	"slices"
	"time"
)

// What a presentation of a refresh token was answered with (Presentation.Result).
const (
	PresentRotated = "rotated" // first use: a successor was issued
	PresentGrace   = "grace"   // a reuse inside the grace: the same successor again
	PresentReused  = "reused"  // a reuse outside the grace: rejected, the family revoked unless ForgiveReuse
	PresentRevoked = "revoked" // the family was already revoked
	PresentExpired = "expired" // the token was past its lifetime
	PresentRefused = "refused" // rejected for another reason (scope) before any state change
	PresentUnknown = "unknown" // never issued here
)

// Presentation is one request that presented a refresh token to the token logic
// (injected failures and dropped connections that never reached it are not counted).
type Presentation struct {
	At time.Time
	// Spent: the token had already been exchanged for a successor before this request.
	Spent bool
	// InGrace: a spent token presented while the provider still answers it as a retry.
	InGrace bool
	Result  string
}

// Respent reports whether this presentation spent an already spent token outside
// the provider's grace: the event a client must never cause.
func (p Presentation) Respent() bool { return p.Spent && !p.InGrace }

// RefreshAudit is what the provider knows about one refresh token it issued.
// Token is the secret itself: compare it, never print it.
type RefreshAudit struct {
	Token         string
	Family        int // 1 for the first family Seed or /authorize started, and so on
	IssuedAt      time.Time
	Live          bool // the family's current refresh token, and the family is not revoked
	Revoked       bool // its family was revoked
	Presentations []Presentation
}

// Respent counts the presentations of the token outside the grace after it was spent.
func (a RefreshAudit) Respent() int {
	n := 0
	for _, p := range a.Presentations {
		if p.Respent() {
			n++
		}
	}
	return n
}

// FamilyAudit is one token family (one business's chain).
type FamilyAudit struct {
	ID        int
	Live      string // "" once revoked
	Revoked   bool
	RevokedAt time.Time
}

// Grace returns the reuse grace the provider was started with.
func (p *Rotating) Grace() time.Duration { return p.grace }

// ReuseDetection reports whether a re-spend outside the grace revokes the family.
func (p *Rotating) ReuseDetection() bool { return p.detect }

// Audit returns every refresh token issued (seeded ones included), oldest first,
// with each presentation of it.
func (p *Rotating) Audit() []RefreshAudit {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]RefreshAudit, 0, len(p.tokens))
	for _, rt := range p.tokens {
		out = append(out, p.auditLocked(rt))
	}
	return out
}

// AuditOf returns the audit of one refresh token; ok is false if it was never issued here.
func (p *Rotating) AuditOf(rt string) (a RefreshAudit, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refresh[rt] == nil {
		return RefreshAudit{}, false
	}
	return p.auditLocked(rt), true
}

func (p *Rotating) auditLocked(rt string) RefreshAudit {
	t := p.refresh[rt]
	return RefreshAudit{
		Token:         rt,
		Family:        t.family.id,
		IssuedAt:      t.issuedAt,
		Live:          !t.family.revoked && t.family.live == rt,
		Revoked:       t.family.revoked,
		Presentations: slices.Clone(t.presented),
	}
}

// Presentations returns how often, when and with what answer rt was presented; nil
// if it never was or was never issued here.
func (p *Rotating) Presentations(rt string) []Presentation {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.refresh[rt]; t != nil {
		return slices.Clone(t.presented)
	}
	return nil
}

// UnknownPresentations returns the presentations of refresh tokens never issued here.
func (p *Rotating) UnknownPresentations() []Presentation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.unknown)
}

// Family returns the family rt belongs to; ok is false if rt was never issued here.
func (p *Rotating) Family(rt string) (f FamilyAudit, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.refresh[rt]
	if t == nil {
		return FamilyAudit{}, false
	}
	return FamilyAudit{ID: t.family.id, Live: t.family.live, Revoked: t.family.revoked, RevokedAt: t.family.revokedAt}, true
}

// Respent returns every presentation of a spent refresh token outside the grace,
// with the token's audit (one entry per token that was re-spent).
func (p *Rotating) Respent() []RefreshAudit {
	var out []RefreshAudit
	for _, a := range p.Audit() {
		if a.Respent() > 0 {
			out = append(out, a)
		}
	}
	return out
}

// Revoke revokes the family of rt, as an operator or the provider's admin would
// (RFC 7009); a later presentation of any of its tokens is answered invalid_grant.
func (p *Rotating) Revoke(rt string) bool {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.refresh[rt]
	if t == nil || t.family.revoked {
		return false
	}
	t.family.revoked, t.family.revokedAt, t.family.live = true, now, ""
	return true
}
