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
	cols := [...][]string{b.actors, b.actions, b.resources, b.outcomes, b.details, b.ips, b.agents}
	args := make([]any, 0, 4+len(cols))
	args = append(args, b.first-1, b.prev, b.ats, b.macs)
	for _, col := range cols {
		args = append(args, packColumn(col))
	}
	return args
}

// packColumn joins vs, each followed by unitSep.
func packColumn(vs []string) string {
	n := len(vs)
	for _, v := range vs {
		n += len(v)
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, v := range vs {
		sb.WriteString(v)
		sb.WriteByte(unitSep)
	}
	return sb.String()
}
