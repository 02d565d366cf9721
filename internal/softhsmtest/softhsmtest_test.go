package softhsmtest_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

func showSlots(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("softhsm2-util", "--show-slots").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --show-slots: %v\n%s", err, out)
	}
	return string(out)
}

func TestNewTokenAndDelete(t *testing.T) {
	a := softhsmtest.NewToken(t)
	b := softhsmtest.NewToken(t)
	if a.Label == b.Label {
		t.Fatalf("labels not unique: %q", a.Label)
	}
	if len(a.Label) > 32 {
		t.Fatalf("label %q longer than the 32 bytes PKCS#11 allows", a.Label)
	}
	if conf := os.Getenv("SOFTHSM2_CONF"); conf == "" || strings.HasPrefix(conf, "/etc/") {
		t.Fatalf("SOFTHSM2_CONF = %q, want a private configuration", conf)
	}
	pin, err := os.ReadFile(a.PINFile)
	if err != nil || strings.TrimSpace(string(pin)) != a.PIN {
		t.Fatalf("PIN file: %q, %v", pin, err)
	}
	if fi, err := os.Stat(a.PINFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("PIN file mode: %v, %v", fi, err)
	}
	slots := showSlots(t)
	for _, tok := range []*softhsmtest.Token{a, b} {
		if !strings.Contains(slots, tok.Label) {
			t.Fatalf("token %s not in --show-slots:\n%s", tok.Label, slots)
		}
		if strings.Contains(slots, tok.PIN) {
			t.Fatal("PIN printed by --show-slots")
		}
	}
	if err := a.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	slots = showSlots(t)
	if strings.Contains(slots, a.Label) {
		t.Fatalf("token %s still present after Delete", a.Label)
	}
	if !strings.Contains(slots, b.Label) {
		t.Fatalf("Delete of %s removed %s too", a.Label, b.Label)
	}
}

func TestCleanupDeletesToken(t *testing.T) {
	var label string
	t.Run("inner", func(t *testing.T) { label = softhsmtest.NewToken(t).Label })
	if label == "" {
		t.Skip("inner test skipped")
	}
	if slots := showSlots(t); strings.Contains(slots, label) {
		t.Fatalf("token %s left behind by its test", label)
	}
}

func TestURI(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	u := tok.URI("a b;c")
	want := "pkcs11:token=" + tok.Label + ";object=a%20b%3Bc?module-path=" + tok.Module + "&pin-source=file:" + tok.PINFile
	if u != want {
		t.Fatalf("URI = %q\nwant  %q", u, want)
	}
	if strings.Contains(u, tok.PIN) {
		t.Fatal("URI contains the PIN")
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"abc-._~09": "abc-._~09",
		"a/b":       "a%2Fb",
		"%":         "%25",
		"é":         "%C3%A9",
		"a&b=c?d":   "a%26b%3Dc%3Fd",
	} {
		if got := softhsmtest.Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}
