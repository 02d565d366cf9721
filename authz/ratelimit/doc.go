// Package ratelimit limits the request rate of each tenant: a Limiter
// answers, for the tenant of a request, whether it may run now and, if
// not, when it may try again.
package ratelimit
