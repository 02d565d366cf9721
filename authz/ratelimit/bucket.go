package ratelimit

import "time"

// bucket is a token bucket that decides as a golang.org/x/time/rate
// Limiter does, float for float (TestLocalMatchesRateLimiter holds it to
// that), without the Limiter's own mutex: its entry's shard lock guards
// it, so a check takes one lock instead of three (the shard's, and the
// Limiter's in TokensAt and AllowN, both needed for Remaining, which no
// one Limiter call reports). Times are readings of the table's clock,
// which never move back for a bucket (entry.seen).
type bucket struct {
	tokens float64 // at last
	last   int64   // when tokens was computed
}

// advance returns the tokens at now for quota q (rate.Limiter.advance).
func (b *bucket) advance(now int64, q *Quota) float64 {
	tokens := b.tokens + time.Duration(now-b.last).Seconds()*q.Rate
	if burst := float64(q.Burst); tokens > burst {
		tokens = burst
	}
	return tokens
}

// take takes one token at now if there is one, as rate.Limiter.AllowN(t,
// 1) does: a token whose wait would round to less than a nanosecond is
// there. It returns whether it took one, and the tokens there were at now.
// A refusal changes nothing.
func (b *bucket) take(now int64, q *Quota) (bool, float64) {
	tokens := b.advance(now, q)
	left := tokens - 1
	if left < 0 && time.Duration(-left/q.Rate*float64(time.Second)) > 0 {
		return false, tokens
	}
	b.tokens, b.last = left, now
	return true, tokens
}

// setQuota moves the bucket to now under its old quota, before the quota
// changes (rate.Limiter.SetLimitAt and SetBurstAt).
func (b *bucket) setQuota(now int64, old *Quota) {
	b.tokens, b.last = b.advance(now, old), now
}
