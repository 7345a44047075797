package tokenclient

import "errors"

var (
	// ErrNeedsReauth is matched (errors.Is) by *NeedsReauthError: the refresher cannot
	// refresh the token until an operator re-authorises it. Retrying does not help.
	ErrNeedsReauth = errors.New("tokenclient: token needs re-authorisation")

	// ErrExpired means the published token has expired and no refresh could be obtained
	// (no Invoker configured, or the on-demand refresh did not publish a valid token).
	ErrExpired = errors.New("tokenclient: published token has expired")

	// ErrMalformed means the access secret is not the documented JSON document.
	ErrMalformed = errors.New("tokenclient: malformed access secret")
)

// NeedsReauthError reports a published status of "needs_reauth". Reason is the
// refresher's explanation (never a secret) and may be empty.
type NeedsReauthError struct {
	Secret string
	Reason string
}

func (e *NeedsReauthError) Error() string {
	msg := "tokenclient: " + e.Secret + ": token needs re-authorisation"
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Is makes errors.Is(err, ErrNeedsReauth) true.
func (e *NeedsReauthError) Is(target error) bool { return target == ErrNeedsReauth }
