package kubetest

import (
	"os"
	"testing"
	"time"
)

// TestWatchdog closes the watchdog's pipe, as the kernel does when the test
// process dies, and expects every process of the cluster to be killed and
// its directory removed.
func TestWatchdog(t *testing.T) {
	t.Parallel()
	bins, err := findBinaries(true)
	if err != nil {
		unavailable(t, err)
	}
	c, err := start(bins, Options{ControllerManager: true})
	if c == nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	if err != nil {
		t.Fatal(err)
	}
	c.watchdogPipe.Close()
	deadline := time.After(20 * time.Second)
	for _, p := range []*proc{c.etcd, c.apiserver, c.cm} {
		select {
		case <-p.exited:
		case <-deadline:
			t.Fatalf("%s still running 20 s after the watchdog was released", p.name)
		}
	}
	for {
		if _, err := os.Stat(c.dir); os.IsNotExist(err) {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("%s still there 20 s after the watchdog was released", c.dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
