package keys

import (
	"encoding/binary"
	"fmt"

	"github.com/rtmx-ai/tenancy/tenant"
)

// MaxBindingField is the longest value of a [Binding] field, in bytes.
const MaxBindingField = 1 << 16

// Binding names the place a sealed value belongs to. [Manager.Seal] binds
// it, with the tenant, into the ciphertext as associated data; the value
// opens only with the same tenant and the same Binding, so a ciphertext
// copied to another row, column, table or tenant does not decrypt.
//
// All three fields are required: a value that truly has no row (a
// per-tenant singleton setting) should use a fixed, descriptive RowKey.
// Fields are arbitrary bytes (up to [MaxBindingField] each); their encoding
// is unambiguous, so {"ab", "c"} and {"a", "bc"} are different bindings.
type Binding struct {
	Table  string // the table (or other collection) holding the value
	Column string // the column (or field) holding the value
	RowKey string // the primary key of the row, encoded the way the caller likes
}

// String returns the binding for logs. Bindings are not secret.
func (b Binding) String() string {
	return fmt.Sprintf("%s.%s[%q]", b.Table, b.Column, b.RowKey)
}

func (b Binding) validate(op string) error {
	check := func(field, v string) error {
		switch {
		case v == "":
			return fmt.Errorf("keys: %s: %w: Binding.%s is empty", op, ErrInvalidArgument, field)
		case len(v) > MaxBindingField:
			return fmt.Errorf("keys: %s: %w: Binding.%s is longer than %d bytes", op, ErrInvalidArgument, field, MaxBindingField)
		}
		return nil
	}
	if err := check("Table", b.Table); err != nil {
		return err
	}
	if err := check("Column", b.Column); err != nil {
		return err
	}
	return check("RowKey", b.RowKey)
}

// Domain labels of the associated data, one per use. The data keyset, the
// blob keyset and the audit keyset are distinct keys, so the labels are
// defence in depth and a version tag for the format.
const (
	adData  = "tenancy/v1/data"
	adBlob  = "tenancy/v1/blob"
	adAudit = "tenancy/v1/audit"
)

// appendField appends s with a 4-byte big-endian length prefix. Prefixing
// every variable-length field with its length makes the concatenation
// injective: no two different field lists encode to the same bytes.
func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// dataAD returns the associated data of a data ciphertext:
//
//	"tenancy/v1/data" || len(tenant) || tenant || len(table) || table ||
//	len(column) || column || len(rowkey) || rowkey
//
// with every len a 4-byte big-endian count. The label is fixed, so it needs
// no prefix. dst is reused if large enough.
func dataAD(dst []byte, id tenant.ID, b Binding) []byte {
	s := id.String()
	n := len(adData) + 16 + len(s) + len(b.Table) + len(b.Column) + len(b.RowKey)
	if cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	dst = append(dst[:0], adData...)
	dst = appendField(dst, s)
	dst = appendField(dst, b.Table)
	dst = appendField(dst, b.Column)
	return appendField(dst, b.RowKey)
}

// boundAD returns label || len(tenant) || tenant || len(data) || data: the
// associated data of a blob stream, and the MAC input of an audit tag.
func boundAD(label string, id tenant.ID, data []byte) []byte {
	s := id.String()
	b := make([]byte, 0, len(label)+8+len(s)+len(data))
	b = append(b, label...)
	b = appendField(b, s)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// keysetAD returns the associated data with which a tenant's keyset is
// wrapped by the master key: "tenancy/v1/keyset/<tenant>/<purpose>". The
// tenant grammar has no '/', and purposes are fixed words, so the string is
// unambiguous. A wrapped keyset copied to another tenant's row, or to
// another purpose's row, does not unwrap.
func keysetAD(id tenant.ID, p Purpose) []byte {
	return []byte("tenancy/v1/keyset/" + id.String() + "/" + string(p))
}
