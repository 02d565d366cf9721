//go:build race

package ratelimit_test

// manyTenants is how many distinct tenants the memory tests make: fewer
// under the race detector, which makes each ten times slower.
const manyTenants = 200_000
