//go:build !race

package ratelimit_test

// manyTenants is how many distinct tenants the memory tests make.
const manyTenants = 1_000_000
