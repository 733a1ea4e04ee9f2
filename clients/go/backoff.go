package agentwire

import (
	"math/rand/v2"
	"time"
)

// Backoff is the reconnect schedule: full jitter, the delay before attempt
// n (from 1) uniform in 0..=min(Max, Min × 2^(n-1)), reset by a connection
// that lasted StableAfter, optionally capped at MaxAttempts in a row.
// JitterFraction narrows the jitter: the delay is ceiling × (1 − j + j ×
// unit), j being 1 (full jitter) for 0, JitterFraction in (0, 1], and 0 (no
// jitter: the ceiling itself) for a negative JitterFraction.
type Backoff struct {
	Min            time.Duration // First ceiling.
	Max            time.Duration // Largest ceiling.
	MaxAttempts    int           // 0: never give up
	StableAfter    time.Duration // A connection this long resets the attempts.
	JitterFraction float64       // See above: 0 full jitter, negative none.
	attempt        int
}

// jitter is the fraction in effect (see Backoff.JitterFraction).
func (b *Backoff) jitter() float64 {
	switch {
	case b.JitterFraction == 0 || b.JitterFraction != b.JitterFraction:
		return 1
	case b.JitterFraction < 0:
		return 0
	default:
		return min(b.JitterFraction, 1)
	}
}

// Ceiling is the largest delay before the next attempt.
func (b *Backoff) Ceiling() time.Duration {
	c := b.Min
	for i := 0; i < b.attempt && c < b.Max; i++ {
		c *= 2
	}
	return min(c, b.Max)
}

// Next gives the delay before the next attempt with unit (uniform in 0..1)
// picking where under the ceiling it falls (within the jitter fraction's
// share of it); false once the attempts are used up.
func (b *Backoff) Next(unit float64) (time.Duration, bool) {
	if b.MaxAttempts > 0 && b.attempt >= b.MaxAttempts {
		return 0, false
	}
	unit = max(0, min(1, unit))
	j := b.jitter()
	d := time.Duration(float64(b.Ceiling()) * (1 - j + j*unit))
	b.attempt++
	return d, true
}

// Attempt is how many attempts were made since the last reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts the schedule over.
func (b *Backoff) Reset() { b.attempt = 0 }

// connectionEnded resets the schedule after a stable connection.
func (b *Backoff) connectionEnded(lasted time.Duration) {
	if lasted >= b.StableAfter {
		b.attempt = 0
	}
}

// randomUnit is a uniform draw in [0, 1).
func randomUnit() float64 { return rand.Float64() }
