package faultproxy

// WaitHandlers blocks until no request is being handled, so a test can tell
// that a cancelled request has been fully dealt with without closing the proxy.
func WaitHandlers(p *Proxy) { p.handlers.Wait() }
