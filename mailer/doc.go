// Package mailer delivers llmspend's notification emails.
//
// A Message is validated (no CR/LF in any header value, RFC 5322
// addresses, both an HTML and a plain-text body), committed to the durable
// outbox (store.Outbox) and then sent by a bounded worker Pool through one
// Sender: SMTP (go-mail), Resend (resend-go), SendGrid (sendgrid-go) or the
// zero-config log sender. Transient failures (SMTP 4xx, HTTP 408/429/5xx,
// network) are retried with exponential backoff and full jitter, honouring a
// server's Retry-After as a minimum; permanent ones (SMTP 5xx, other HTTP
// 4xx) are recorded as failed with the reason.
//
// # Delivery guarantee
//
// Delivery is at-least-once. A message is committed to the outbox before
// Enqueue returns, so nothing accepted is lost across crashes, reloads or
// restarts. The one duplicate window is a crash (or a lease expiry) between
// the backend accepting a message and the outbox recording MarkSent:
//
//   - SMTP: if the process dies after the server answered 250 to the end of
//     DATA but before MarkSent commits, the message is sent again after the
//     lease expires. The Message-ID header is derived from the idempotency
//     key (see MessageID), so it is identical on every attempt and mail
//     clients or a relay that de-duplicates by Message-ID can drop the copy.
//   - Resend: every request carries the message's Idempotency-Key, so the
//     repeated request is answered from Resend's idempotency cache (24 h)
//     and no second email is sent.
//   - SendGrid has no idempotency key; the key travels in custom_args
//     (llmspend_idempotency_key) so a duplicate can at least be traced.
//
// This package has no Caddy imports; caddymodule adapts it.
package mailer
