package admit_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rtmx-ai/tenancy/store/internal/admit"
)

func TestScratchCancel(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				b := pgproto3.NewBackend(c, c)
				m, err := b.ReceiveStartupMessage()
				if err != nil {
					return
				}
				if _, ok := m.(*pgproto3.CancelRequest); ok {
					t.Logf("server got cancel request")
					c.Close()
					return
				}
				b.Send(&pgproto3.AuthenticationOk{})
				b.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
				b.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				b.Flush()
				for {
					if _, err := b.Receive(); err != nil {
						return
					}
				}
			}()
		}
	}()
	c, _ := admit.New(admit.Config{MaxConns: 1})
	cfg, _ := pgconn.ParseConfig("postgres://u@" + ln.Addr().String() + "/db?sslmode=disable")
	cfg.DialFunc = c.Dial("a", cfg.DialFunc)
	pc, err := pgconn.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = pc.Exec(ctx, "select pg_sleep(10)").ReadAll()
	t.Logf("exec: %v", err)
	start := time.Now()
	for c.Stats().Open != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("slot freed after %v, stats %+v", time.Since(start), c.Stats())
}
