package faults_test

import (
	"testing"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
)

func TestMain(m *testing.M) { pgtest.Main(m, softhsmtest.Cleanup) }
