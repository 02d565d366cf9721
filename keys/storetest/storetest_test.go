package storetest_test

import (
	"testing"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/storetest"
)

// The suite passes on a new MemStore per clause, and on one MemStore shared
// by every clause and by two runs of the suite.
func TestMemStore(t *testing.T) {
	storetest.TestStore(t, func(*testing.T) keys.Store { return keys.NewMemStore() })
}

func TestMemStoreShared(t *testing.T) {
	s := keys.NewMemStore()
	for range 2 {
		storetest.TestStore(t, func(*testing.T) keys.Store { return s })
	}
}
