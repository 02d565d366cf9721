//go:build cgo

package softhsmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/miekg/pkcs11"
)

// Objects lists every object of the token that its user sees, one line
// each (class, label, and for secret keys ID and key type), sorted: tests
// compare the lists before and after an operation to show what it
// touched. It talks PKCS#11 directly (github.com/miekg/pkcs11), in a
// session of its own; a PKCS#11 client of the test (crypto11) may hold
// the module open and the user logged in meanwhile, and is not disturbed:
// the user is logged out at the end only if Objects logged in.
func (t *Token) Objects(tb testing.TB) []string {
	tb.Helper()
	module, err := filepath.EvalSymlinks(t.Module)
	if err != nil {
		tb.Fatal(err)
	}
	p := pkcs11.New(module)
	if p == nil {
		tb.Fatalf("softhsmtest: loading %s failed", module)
	}
	defer p.Destroy() // this handle only; another client keeps the module
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		tb.Fatalf("softhsmtest: C_Initialize: %v", err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		tb.Fatal(err)
	}
	for _, slot := range slots {
		info, err := p.GetTokenInfo(slot)
		if err != nil || info.Label != t.Label {
			continue
		}
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			tb.Fatal(err)
		}
		defer func() { _ = p.CloseSession(s) }()
		switch err := p.Login(s, pkcs11.CKU_USER, t.PIN); {
		case err == nil:
			defer func() { _ = p.Logout(s) }()
		case !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)):
			tb.Fatalf("softhsmtest: C_Login: %v", err)
		}
		return objects(tb, p, s)
	}
	tb.Fatalf("softhsmtest: token %s not found", t.Label)
	return nil
}

func objects(tb testing.TB, p *pkcs11.Ctx, s pkcs11.SessionHandle) []string {
	tb.Helper()
	if err := p.FindObjectsInit(s, nil); err != nil {
		tb.Fatal(err)
	}
	var handles []pkcs11.ObjectHandle
	for {
		hs, _, err := p.FindObjects(s, 100)
		if err != nil {
			tb.Fatal(err)
		}
		if len(hs) == 0 {
			break
		}
		handles = append(handles, hs...)
	}
	if err := p.FindObjectsFinal(s); err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, h := range handles {
		attrs, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		})
		if err != nil {
			tb.Fatal(err)
		}
		class := ulong(attrs[0].Value)
		line := fmt.Sprintf("class=%d label=%q", class, attrs[1].Value)
		if class == pkcs11.CKO_SECRET_KEY {
			ka, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
			})
			if err != nil {
				tb.Fatal(err)
			}
			line += fmt.Sprintf(" id=%x key-type=%d", ka[0].Value, ulong(ka[1].Value))
		}
		out = append(out, line)
	}
	slices.Sort(out)
	return out
}

// ulong decodes a CK_ULONG attribute value (native byte order).
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return 0
}
