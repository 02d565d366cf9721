package pkcs11kms

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// White-box tests of the panic and timeout guards around crypto11 calls,
// which a real module cannot be made to trigger on demand.

func TestProtectRecoversPanics(t *testing.T) {
	for _, v := range []any{"boom", errors.New("C_EncryptInit: pkcs11: 0x30: CKR_DEVICE_ERROR"), 42} {
		got, err := protect(func() (int, error) { panic(v) })
		if err == nil || got != 0 {
			t.Fatalf("protect(panic(%v)) = %d, %v", v, got, err)
		}
		if !strings.Contains(err.Error(), "recovered panic") {
			t.Fatalf("error %q does not say it was a panic", err)
		}
	}
	_, err := protect(func() (int, error) { panic(errors.New("pkcs11: 0x30: CKR_DEVICE_ERROR")) })
	if ckr(err) != "CKR_DEVICE_ERROR" || !tokenGone(ckr(err)) {
		t.Fatalf("code of a recovered panic not found: %q", ckr(err))
	}
}

func TestCallBoundedByContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := call(ctx, func() (int, error) { <-release; return 1, nil }) // a hung module call
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("call returned after %v", d)
	}
	_, err = call(ctx, func() (int, error) { panic("in goroutine") })
	if err == nil {
		t.Fatal("call with a done context ran f")
	}
	v, err := call(context.Background(), func() (int, error) { panic("inline") })
	if err == nil || v != 0 {
		t.Fatalf("inline panic: %d, %v", v, err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if _, err := call(ctx2, func() (int, error) { panic("goroutine") }); err == nil || !strings.Contains(err.Error(), "recovered panic") {
		t.Fatalf("goroutine panic: %v", err)
	}
}
