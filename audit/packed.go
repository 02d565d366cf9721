package audit

import "strings"

// unitSep ends every value of a packed column (see appendFunctionSQL): no
// field of an entry holds it (the text fields refuse control characters,
// canonical JSON escapes them, outcomes and addresses have none).
const unitSep = '\x1f'

// appendArgs returns the arguments of appendSQL for b: the head it
// follows, the times and MACs as arrays, and each text column packed into
// one string, every value followed by unitSep. (pgx encodes an array of n
// strings element by element; a packed column is a few copies, and the
// server splits it in C.) The sequence numbers and previous MACs are not
// sent: they follow from the head and the MACs.
func (b *batch) appendArgs() []any {
	args := make([]any, 0, 11)
	args = append(args, b.first-1, b.prev, b.ats, b.macs)
	for _, f := range [...]func(*prepared) string{
		func(p *prepared) string { return p.actor },
		func(p *prepared) string { return p.action },
		func(p *prepared) string { return p.resource },
		func(p *prepared) string { return string(p.outcome) },
	} {
		args = append(args, packColumn(b.items, f))
	}
	// The details and the addresses are parts of each entry's canonical
	// encoding.
	return append(args, packBytes(b.items, (*prepared).details), packBytes(b.items, (*prepared).ipText),
		packColumn(b.items, func(p *prepared) string { return p.userAgent }))
}

// packColumn joins the values f gives of items, each followed by unitSep.
func packColumn(items []*prepared, f func(*prepared) string) string {
	n := len(items)
	for _, p := range items {
		n += len(f(p))
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, p := range items {
		sb.WriteString(f(p))
		sb.WriteByte(unitSep)
	}
	return sb.String()
}

// packBytes is packColumn of values given as bytes.
func packBytes(items []*prepared, f func(*prepared) []byte) string {
	n := len(items)
	for _, p := range items {
		n += len(f(p))
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, p := range items {
		sb.Write(f(p))
		sb.WriteByte(unitSep)
	}
	return sb.String()
}
