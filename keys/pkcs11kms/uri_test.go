package pkcs11kms_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
)

const (
	mod = "/usr/lib/softhsm/libsofthsm2.so"
	q   = "?module-path=" + mod + "&pin-source=env:TENANCY_HSM_PIN"
)

func TestParseKeyURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want pkcs11kms.KeyURI
	}{
		{"pkcs11:token=tenancy;object=master-kek" + q,
			pkcs11kms.KeyURI{Token: "tenancy", Object: "master-kek", ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		// order is free, type=secret-key allowed
		{"pkcs11:object=k;type=secret-key;token=t?pin-source=file:/run/secrets/hsm-pin&module-path=" + mod,
			pkcs11kms.KeyURI{Token: "t", Object: "k", ModulePath: mod, PINSource: "file:/run/secrets/hsm-pin"}},
		// percent-encoding, upper and lower case hex
		{"pkcs11:token=my%20token;object=a%2fb%3Bc%3d%25" + q,
			pkcs11kms.KeyURI{Token: "my token", Object: "a/b;c=%", ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		// reserved characters allowed unencoded in the path
		{"pkcs11:token=a:b@c!$'()*+,=;object=x[1]" + q,
			pkcs11kms.KeyURI{Token: "a:b@c!$'()*+,=", Object: "x[1]", ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		// UTF-8 labels
		{"pkcs11:token=%C3%A9t%C3%A9;object=k" + q,
			pkcs11kms.KeyURI{Token: "été", Object: "k", ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		// '+' is not a space in RFC 7512
		{"pkcs11:token=a+b;object=k" + q,
			pkcs11kms.KeyURI{Token: "a+b", Object: "k", ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		// 32-byte token label is the maximum
		{"pkcs11:token=" + strings.Repeat("x", 32) + ";object=k" + q,
			pkcs11kms.KeyURI{Token: strings.Repeat("x", 32), Object: "k", ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		// an id: percent-encoded bytes of any value, NUL and 0xFF included,
		// upper or lower case hex, or raw pk11-pchar characters
		{"pkcs11:token=t;object=k;id=%00%ff%0A%7f" + q,
			pkcs11kms.KeyURI{Token: "t", Object: "k", ID: []byte{0, 0xff, '\n', 0x7f}, ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		{"pkcs11:id=ab:c;token=t;object=k" + q,
			pkcs11kms.KeyURI{Token: "t", Object: "k", ID: []byte("ab:c"), ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
		// 128 id bytes are the maximum
		{"pkcs11:token=t;object=k;id=" + strings.Repeat("%01", 128) + q,
			pkcs11kms.KeyURI{Token: "t", Object: "k", ID: []byte(strings.Repeat("\x01", 128)), ModulePath: mod, PINSource: "env:TENANCY_HSM_PIN"}},
	} {
		got, err := pkcs11kms.ParseKeyURI(tc.uri)
		if err != nil {
			t.Errorf("ParseKeyURI(%q): %v", tc.uri, err)
			continue
		}
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("ParseKeyURI(%q) = %+v, want %+v", tc.uri, *got, tc.want)
		}
		again, err := pkcs11kms.ParseKeyURI(got.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("String() %q does not parse back: %+v, %v", got.String(), again, err)
		}
	}
}

func TestParseKeyURIRejects(t *testing.T) {
	const pin = "s3cr3t-1234"
	for _, tc := range []struct {
		name, uri string
		attr      string // attribute the error must name ("" = none)
		says      string // text the message must contain
	}{
		{"empty", "", "", "scheme"},
		{"wrong scheme", "pkcs12:token=t;object=k" + q, "", "scheme"},
		{"upper-case scheme", "PKCS11:token=t;object=k" + q, "", "scheme"},
		{"scheme with slashes", "pkcs11://token=t;object=k" + q, "//token", "unknown"},
		{"local scheme", "local:///etc/kek" + q, "", "scheme"},
		{"empty path", "pkcs11:" + q, "", "token and object"},
		{"scheme only", "pkcs11:", "", "token and object"},
		{"missing token", "pkcs11:object=k" + q, "token", "missing"},
		{"missing object", "pkcs11:token=t" + q, "object", "missing"},
		{"empty token", "pkcs11:token=;object=k" + q, "token", "missing"},
		{"missing query", "pkcs11:token=t;object=k", "module-path", "missing"},
		{"missing module-path", "pkcs11:token=t;object=k?pin-source=env:P", "module-path", "missing"},
		{"missing pin-source", "pkcs11:token=t;object=k?module-path=" + mod, "pin-source", "missing"},
		{"empty query", "pkcs11:token=t;object=k?", "", "empty query"},
		{"pin-value", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-value=" + pin, "pin-value", "must not be written in a URI"},
		{"pin-value and pin-source", "pkcs11:token=t;object=k" + q + "&pin-value=" + pin, "pin-value", "pin-source=env:NAME"},
		{"pin-value in path", "pkcs11:token=t;object=k;pin-value=" + pin + q, "pin-value", "unknown"},
		{"unknown path attr", "pkcs11:token=t;object=k;colour=red" + q, "colour", "unknown path attribute"},
		{"unknown query attr", "pkcs11:token=t;object=k" + q + "&debug=1", "debug", "unknown query attribute"},
		{"upper-case attr", "pkcs11:Token=t;object=k" + q, "Token", "unknown"},
		{"empty id", "pkcs11:token=t;object=k;id=" + q, "id", "empty"},
		{"id too long", "pkcs11:token=t;object=k;id=" + strings.Repeat("%01", 129) + q, "id", "too long"},
		{"duplicate id", "pkcs11:token=t;object=k;id=%01;id=%02" + q, "id", "more than once"},
		{"id truncated percent", "pkcs11:token=t;object=k;id=%0" + q, "id", "truncated"},
		{"id bad hex", "pkcs11:token=t;object=k;id=%g1" + q, "id", "invalid percent"},
		{"id raw slash", "pkcs11:token=t;object=k;id=a/b" + q, "id", "percent-encoded"},
		{"id in the query", "pkcs11:token=t;object=k" + q + "&id=%01", "id", "unknown query attribute"},
		{"missing object with id", "pkcs11:token=t;id=%01" + q, "object", "missing"},
		{"serial unsupported", "pkcs11:token=t;object=k;serial=1" + q, "serial", "not supported"},
		{"module-name", "pkcs11:token=t;object=k?module-name=softhsm2&pin-source=env:P", "module-name", "module-path"},
		{"type not secret-key", "pkcs11:token=t;object=k;type=private" + q, "type", "secret-key"},
		{"duplicate token", "pkcs11:token=t;token=u;object=k" + q, "token", "more than once"},
		{"duplicate pin-source", "pkcs11:token=t;object=k" + q + "&pin-source=env:OTHER", "pin-source", "more than once"},
		{"no equals", "pkcs11:token;object=k" + q, "token", "no '='"},
		{"empty name", "pkcs11:=t;object=k" + q, "", "empty name"},
		{"trailing semicolon", "pkcs11:token=t;object=k;" + q, "", "stray separator"},
		{"double ampersand", "pkcs11:token=t;object=k?module-path=" + mod + "&&pin-source=env:P", "", "stray separator"},
		{"fragment", "pkcs11:token=t;object=k" + q + "#frag", "", "fragment"},
		{"truncated percent", "pkcs11:token=t;object=k%4" + q, "object", "truncated"},
		{"lone percent", "pkcs11:token=t%;object=k" + q, "token", "truncated"},
		{"bad hex", "pkcs11:token=t;object=k%zz" + q, "object", "invalid percent"},
		{"NUL", "pkcs11:token=t;object=k%00x" + q, "object", "control character"},
		{"newline", "pkcs11:token=t;object=k%0Ainjected" + q, "object", "control character"},
		{"DEL", "pkcs11:token=t;object=k%7F" + q, "object", "control character"},
		{"invalid UTF-8", "pkcs11:token=t;object=%FF%FE" + q, "object", "UTF-8"},
		{"raw space", "pkcs11:token=t;object=a b" + q, "object", "percent-encoded"},
		{"raw slash in path", "pkcs11:token=t;object=a/b" + q, "object", "percent-encoded"},
		{"raw question mark in path value", "pkcs11:token=t;object=k?x" + q, "", ""},
		{"raw non-ASCII", "pkcs11:token=t;object=é" + q, "object", "percent-encoded"},
		{"token too long", "pkcs11:token=" + strings.Repeat("x", 33) + ";object=k" + q, "token", "too long"},
		{"object too long", "pkcs11:token=t;object=" + strings.Repeat("x", 129) + q, "object", "too long"},
		{"huge", "pkcs11:token=t;object=" + strings.Repeat("x", 5000) + q, "", "4096"},
		{"relative module", "pkcs11:token=t;object=k?module-path=libsofthsm2.so&pin-source=env:P", "module-path", "absolute"},
		{"module with dot-dot", "pkcs11:token=t;object=k?module-path=/usr/lib/../lib/x.so&pin-source=env:P", "module-path", "clean absolute"},
		{"module encoded dot-dot", "pkcs11:token=t;object=k?module-path=/usr/lib/%2E%2E/x.so&pin-source=env:P", "module-path", "clean absolute"},
		{"pin-source plain", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=" + pin, "pin-source", "env:NAME or file:"},
		{"pin-source pipe", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=|/bin/cat", "pin-source", "env:NAME or file:"},
		{"pin-source https", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=https://x/pin", "pin-source", "env:NAME or file:"},
		{"pin-source bad env", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=env:1X", "pin-source", "environment variable name"},
		{"pin-source empty env", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=env:", "pin-source", "environment variable name"},
		{"pin-source env with =", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=env:A=B", "pin-source", "environment variable name"},
		{"pin-source relative file", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=file:pin.txt", "pin-source", "absolute"},
		{"pin-source file URL", "pkcs11:token=t;object=k?module-path=" + mod + "&pin-source=file:///etc/pin", "pin-source", "clean absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := pkcs11kms.ParseKeyURI(tc.uri)
			if err == nil {
				t.Fatalf("accepted: %+v", k)
			}
			if !errors.Is(err, pkcs11kms.ErrInvalidURI) {
				t.Fatalf("error %v does not match ErrInvalidURI", err)
			}
			var ue *pkcs11kms.URIError
			if !errors.As(err, &ue) {
				t.Fatalf("error %T is not a *URIError", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "pkcs11kms: ") {
				t.Errorf("message %q lacks the package prefix", msg)
			}
			if tc.attr != "" && ue.Attr != tc.attr {
				t.Errorf("Attr = %q, want %q (%s)", ue.Attr, tc.attr, msg)
			}
			if !strings.Contains(msg, tc.says) {
				t.Errorf("message %q does not say %q", msg, tc.says)
			}
			if strings.Contains(msg, pin) {
				t.Errorf("message %q contains the PIN", msg)
			}
			if strings.ContainsAny(msg, "\n\x00") {
				t.Errorf("message %q contains a control character", msg)
			}
		})
	}
}

func TestURIErrorTruncatesHostileNames(t *testing.T) {
	name := strings.Repeat("A", 1000) + "\nFAKE LOG LINE"
	_, err := pkcs11kms.ParseKeyURI("pkcs11:token=t;object=k;" + name + "=v" + q)
	if err == nil {
		t.Fatal("accepted")
	}
	if msg := err.Error(); len(msg) > 200 || strings.Contains(msg, "\n") {
		t.Fatalf("message not truncated/escaped: %q", msg)
	}
}

func TestKeyURIString(t *testing.T) {
	k := pkcs11kms.KeyURI{Token: "a b", Object: "x/y;z", ModulePath: "/opt/hsm/lib p11.so", PINSource: "file:/run/pin"}
	want := "pkcs11:token=a%20b;object=x%2Fy%3Bz?module-path=/opt/hsm/lib%20p11.so&pin-source=file:/run/pin"
	if got := k.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	// The id comes after the object, every byte of it %XX with upper-case
	// hex, unreserved characters too.
	k.ID = []byte{0xab, 0x00, 'a', '-', 0xff}
	want = "pkcs11:token=a%20b;object=x%2Fy%3Bz;id=%AB%00%61%2D%FF?module-path=/opt/hsm/lib%20p11.so&pin-source=file:/run/pin"
	if got := k.String(); got != want {
		t.Fatalf("String() with an id = %q, want %q", got, want)
	}
}

func FuzzParseKeyURI(f *testing.F) {
	f.Add("pkcs11:token=tenancy;object=master-kek" + q)
	f.Add("pkcs11:token=a%20b;object=x%2Fy?module-path=/a&pin-source=file:/b")
	f.Add("pkcs11:token=t;object=k?pin-value=1234")
	f.Add("pkcs11:token=t;object=k;id=%00%ab%CDx" + q)
	f.Fuzz(func(t *testing.T, s string) {
		k, err := pkcs11kms.ParseKeyURI(s)
		if err != nil {
			if !errors.Is(err, pkcs11kms.ErrInvalidURI) {
				t.Fatalf("error %v does not match ErrInvalidURI", err)
			}
			return
		}
		if strings.Contains(s, "pin-value") && !strings.Contains(k.Token+k.Object+string(k.ID)+k.ModulePath+k.PINSource, "pin-value") {
			t.Fatalf("accepted a pin-value attribute: %q", s)
		}
		again, err := pkcs11kms.ParseKeyURI(k.String())
		if err != nil || !reflect.DeepEqual(again, k) {
			t.Fatalf("String() %q of %q does not parse back: %v", k.String(), s, err)
		}
	})
}

// Every spelling of one key has one canonical URI and one identity; the
// pin-source changes the canonical URI (it must stay usable) but not the
// identity (it says how to log in, not which key).
func TestCanonicalFormAndIdentity(t *testing.T) {
	const canon = "pkcs11:token=tenancy;object=master-kek?module-path=" + mod + "&pin-source=env:TENANCY_HSM_PIN"
	const identity = "pkcs11:token=tenancy;object=master-kek?module-path=" + mod + "&pin-source="
	for _, alias := range []string{
		canon,
		"pkcs11:object=master-kek;token=tenancy?pin-source=env:TENANCY_HSM_PIN&module-path=" + mod,
		"pkcs11:token=tenancy;type=secret-key;object=master-kek" + q,
		"pkcs11:token=%74enancy;object=master%2Dkek" + q,
		"pkcs11:token=%74%65%6e%61%6E%63%79;object=master-kek?module-path=%2Fusr%2Flib/softhsm/libsofthsm2.so&pin-source=env%3ATENANCY_HSM_PIN",
	} {
		k, err := pkcs11kms.ParseKeyURI(alias)
		if err != nil {
			t.Fatalf("ParseKeyURI(%q): %v", alias, err)
		}
		if got := k.String(); got != canon {
			t.Errorf("canonical form of %q = %q, want %q", alias, got, canon)
		}
		if got := k.Identity(); got != identity {
			t.Errorf("identity of %q = %q, want %q", alias, got, identity)
		}
	}
	other, err := pkcs11kms.ParseKeyURI("pkcs11:token=tenancy;object=master-kek?module-path=" + mod + "&pin-source=file:/run/secrets/pin")
	if err != nil {
		t.Fatal(err)
	}
	if other.Identity() != identity {
		t.Errorf("another pin-source changed the identity: %q", other.Identity())
	}
	if other.String() == canon || !strings.HasSuffix(other.String(), "&pin-source=file:/run/secrets/pin") {
		t.Errorf("the canonical URI must keep its own pin-source: %q", other.String())
	}
	// Other keys: other object, token or module; a value that is a prefix
	// of the other's never makes one identity a prefix of the other URI.
	for _, u := range []string{
		"pkcs11:token=tenancy;object=master-kek2" + q,
		"pkcs11:token=tenancy;object=master" + q,
		"pkcs11:token=tenancy2;object=master-kek" + q,
		"pkcs11:token=tenanc;object=master-kek" + q,
		"pkcs11:token=tenancy;object=master-kek?module-path=" + mod + "2&pin-source=env:TENANCY_HSM_PIN",
		"pkcs11:token=tenancy;object=master-kek?module-path=/usr/lib/softhsm/libsofthsm&pin-source=env:TENANCY_HSM_PIN",
	} {
		k, err := pkcs11kms.ParseKeyURI(u)
		if err != nil {
			t.Fatalf("ParseKeyURI(%q): %v", u, err)
		}
		if k.Identity() == identity || strings.HasPrefix(k.String(), identity) || strings.HasPrefix(canon, k.Identity()) {
			t.Errorf("%q and %q share an identity", u, canon)
		}
	}
}

// An id has one canonical spelling and is part of the identity: %ab, %AB
// and a raw character name one key; another id, or none, names another.
func TestIDCanonicalFormAndIdentity(t *testing.T) {
	const canon = "pkcs11:token=tenancy;object=kek;id=%AB%61%00?module-path=" + mod + "&pin-source=env:TENANCY_HSM_PIN"
	const identity = "pkcs11:token=tenancy;object=kek;id=%AB%61%00?module-path=" + mod + "&pin-source="
	for _, alias := range []string{
		canon,
		"pkcs11:token=tenancy;object=kek;id=%ab%61%00" + q,
		"pkcs11:token=tenancy;object=kek;id=%aBa%00" + q,
		"pkcs11:id=%Ab%61%00;object=kek;type=secret-key;token=tenancy?pin-source=env:TENANCY_HSM_PIN&module-path=" + mod,
		"pkcs11:token=tenancy;id=%AB%61%00;object=kek?module-path=" + mod + "&pin-source=file:/run/pin",
	} {
		k, err := pkcs11kms.ParseKeyURI(alias)
		if err != nil {
			t.Fatalf("ParseKeyURI(%q): %v", alias, err)
		}
		if got := k.Identity(); got != identity {
			t.Errorf("identity of %q = %q, want %q", alias, got, identity)
		}
		if !strings.Contains(alias, "file:") {
			if got := k.String(); got != canon {
				t.Errorf("canonical form of %q = %q, want %q", alias, got, canon)
			}
		}
	}
	for _, u := range []string{
		"pkcs11:token=tenancy;object=kek" + q,                   // no id
		"pkcs11:token=tenancy;object=kek;id=%AB%61" + q,         // a prefix of the id
		"pkcs11:token=tenancy;object=kek;id=%AB%61%00%00" + q,   // the id and more
		"pkcs11:token=tenancy;object=kek;id=%AB%41%00" + q,      // 'A', not 'a'
		"pkcs11:token=tenancy;object=kek2;id=%AB%61%00" + q,     // another label
		"pkcs11:token=tenancy2;object=kek;id=%AB%61%00" + q,     // another token
		"pkcs11:token=tenancy;object=kek%3Bid%3D;id=%AB" + q,    // an object that looks like an id
		"pkcs11:token=tenancy;object=kek;id=%3Bid%3D%AB%61" + q, // an id that looks like one
	} {
		k, err := pkcs11kms.ParseKeyURI(u)
		if err != nil {
			t.Fatalf("ParseKeyURI(%q): %v", u, err)
		}
		if k.Identity() == identity || strings.HasPrefix(k.String(), identity) || strings.HasPrefix(canon, k.Identity()) {
			t.Errorf("%q and %q share an identity", u, canon)
		}
	}
}
