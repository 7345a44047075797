package refresher

import (
	"errors"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/provider"
)

// maxRetryDelay is the longest failure back-off.
const maxRetryDelay = time.Hour

// retryDelay backs a failing token off: 5 min doubling to 1 h.
func retryDelay(failures int) time.Duration {
	d := 5 * time.Minute
	for i := 1; i < failures && d < maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxRetryDelay)
}

// throttledUntil honours Retry-After; otherwise the next quota day, or the next reconcile.
func (t *tokenRun) throttledUntil(err error) time.Time {
	now := t.e.now()
	var pe *provider.Error
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		return now.Add(pe.RetryAfter)
	}
	if t.hasQuota {
		y, m, d := now.In(t.quota.Location).Date()
		return time.Date(y, m, d+1, 0, 0, 0, 0, t.quota.Location)
	}
	return now.Add(t.e.opts.ScheduleInterval)
}

// markThrottled records the throttle in every quota day it covers, so other tokens of the
// same quota wait too; the token's own next_due_at moves with the release either way.
func (t *tokenRun) markThrottled(until time.Time) {
	if !t.hasQuota {
		return
	}
	last := ledger.Day(until, t.quota.Location)
	for at := t.e.now(); ; at = at.Add(24 * time.Hour) {
		day := ledger.Day(at, t.quota.Location)
		if err := t.e.opts.Ledger.Throttle(t.ctx, t.quota.Key, day, until); err != nil {
			t.log.WarnContext(t.ctx, "recording the throttle failed", "error", err.Error())
		}
		if day >= last {
			return
		}
	}
}
