package admit_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/rtmx-ai/tenancy/store/internal/admit"
)

// With room for one connection, tenant-b's dial gets in by asking
// tenant-a's pool to close its idle connection.
func ExampleController_Dial() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() { // a server that reads until the client hangs up
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()

	c, err := admit.New(admit.Config{MaxConns: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	// tenant-a's pool opens a connection and keeps it idle.
	idle, err := c.Dial("tenant-a", nil)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	unregister := c.Register("tenant-a", func(minAge time.Duration) bool {
		if idle == nil {
			return false
		}
		idle.Close()
		idle = nil
		return true
	})
	defer unregister()

	// tenant-b's request waits for the slot, and tenant-a's pool gives it up.
	conn, err := c.Dial("tenant-b", nil)(admit.WithRequest(ctx), "tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	s := c.Stats()
	fmt.Printf("open %d, connects %d, waits %d, evictions %d\n", s.Open, s.Connects, s.Waits, s.Evictions)

	conn.Close()
	fmt.Println("open after close:", c.Stats().Open)
	// Output:
	// open 1, connects 2, waits 1, evictions 1
	// open after close: 0
}
