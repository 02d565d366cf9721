package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the JSON documents the package reads.
const (
	// MaxValueBytes bounds the JSON document of one section's value.
	MaxValueBytes = 1 << 20
	// MaxDepth bounds the nesting of arrays and objects in every document
	// the package reads: a section's value, a custom-fields schema and a
	// record's custom fields.
	MaxDepth = 32
)

// pathStyle is how scan names the place of a problem.
type pathStyle int

const (
	fieldPaths   pathStyle = iota // jira.base_url, users[2].email (under path)
	pointerPaths                  // JSON pointers: /users/2/email
)

// scan checks that data is one JSON value of at most maxDepth levels of
// nesting, valid UTF-8 and with no object repeating a key (parsers
// disagree on which one wins), reporting each problem. It reads tokens
// one at a time, so a deep or large document costs no recursion; paths
// are built only for problems.
func scan(p *problems, path string, data []byte, maxDepth int, style pathStyle) bool {
	if !utf8.Valid(data) {
		p.add(path, "must be valid UTF-8")
		return false
	}
	type level struct {
		object    bool
		keys      map[string]struct{}
		expectKey bool
		key       string // the member being read (objects)
		n         int    // elements begun so far (arrays)
	}
	var stack []*level
	// at is the path of the value being read in the innermost container.
	at := func() string {
		if style == pointerPaths {
			loc := make([]string, len(stack))
			for i, l := range stack {
				if l.object {
					loc[i] = l.key
				} else {
					loc[i] = strconv.Itoa(l.n - 1)
				}
			}
			return pointer(loc)
		}
		out := path
		for _, l := range stack {
			if l.object {
				out = field(out, l.key)
			} else {
				out = index(out, l.n-1)
			}
		}
		return out
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	ok, started := true, false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			if !started {
				p.add(path, "must be a JSON value (the document is empty)")
				return false
			}
			return ok
		}
		if err != nil {
			p.add(path, "must be valid JSON: "+jsonMessage(err))
			return false
		}
		if started && len(stack) == 0 {
			p.add(path, "must hold one JSON value, not several")
			return false
		}
		started = true
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expectKey {
			if k, isKey := tok.(string); isKey {
				top.key = k
				if _, dup := top.keys[k]; dup {
					p.add(at(), "must not be given twice")
					ok = false
				}
				top.keys[k] = struct{}{}
				top.expectKey = false
				continue
			}
		}
		if top != nil {
			if top.object {
				top.expectKey = true
			} else {
				top.n++
			}
		}
		if n, isNum := tok.(json.Number); isNum {
			if r := checkNumber(string(n)); r != "" {
				p.add(at(), r)
				ok = false
			}
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) == maxDepth {
				p.add(at(), "must not nest arrays and objects more than "+strconv.Itoa(maxDepth)+" levels deep")
				return false
			}
			l := &level{object: tok == json.Delim('{'), expectKey: true}
			if l.object {
				l.keys = map[string]struct{}{}
			}
			stack = append(stack, l)
		case json.Delim('}'), json.Delim(']'):
			// (The advance above was of the container being closed.)
			stack = stack[:len(stack)-1]
		}
	}
}

// Bounds of a JSON number: a number such as 1e1000000 is valid JSON, but
// exact arithmetic on it (JSON Schema's minimum, maximum and multipleOf use
// big.Rat) takes a million-digit integer and tens of milliseconds each.
const (
	maxNumberBytes    = 100
	maxNumberExponent = 400 // beyond float64's range either way
)

// checkNumber returns the rule JSON number n breaks, or "".
func checkNumber(n string) string {
	const rule = "must be a number of at most 100 characters with an exponent from -400 to 400"
	if len(n) > maxNumberBytes {
		return rule
	}
	if i := strings.IndexAny(n, "eE"); i >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(n[i+1:], "+"))
		if err != nil || e < -maxNumberExponent || e > maxNumberExponent {
			return rule
		}
	}
	return ""
}

// jsonMessage is the message of a JSON syntax error, with its offset.
func jsonMessage(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return se.Error() + " (at byte " + strconv.FormatInt(se.Offset, 10) + ")"
	}
	return "unexpected end of the document"
}

var (
	secretType = reflect.TypeFor[Secret]()
	rawType    = reflect.TypeFor[json.RawMessage]()
)

// maxItems bounds every array and object of a section's value.
const maxItems = 10_000

// shape checks that v, decoded with UseNumber, fits Go type t: every
// object key a field of the struct (by its json tag), every value of the
// JSON type its field takes. Each problem is reported with its path.
//
// Every problem but an unknown field sets p.typed; an unknown field is
// deleted from v, and sets *unknown.
func shape(p *problems, path string, v any, t reflect.Type, unknown *bool) {
	before := len(p.list)
	defer func() {
		for _, q := range p.list[before:] {
			if q.Rule != "is not a known field" {
				p.typed = true
			}
		}
	}()
	switch {
	case t == secretType:
		if _, isStr := v.(string); v != nil && !isStr {
			p.add(path, "must be a string or null, not "+jsonKind(v))
		}
		return
	case t == rawType:
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v != nil {
			shape(p, path, v, t.Elem(), unknown)
		}
	case reflect.Struct:
		m, isObj := v.(map[string]any)
		if !isObj {
			p.add(path, "must be an object, not "+jsonKind(v))
			return
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			f, known := fields[k]
			if !known {
				p.list = append(p.list, Problem{Path: field(path, k), Rule: "is not a known field"})
				// Removed, so that encoding/json, which matches keys
				// without regard to case, cannot take it for a field.
				delete(m, k)
				*unknown = true
				continue
			}
			shape(p, field(path, k), m[k], f, unknown)
		}
	case reflect.Slice:
		if v == nil {
			return
		}
		a, isArr := v.([]any)
		if !isArr {
			p.add(path, "must be an array, not "+jsonKind(v))
			return
		}
		if len(a) > maxItems {
			p.add(path, "must have at most "+strconv.Itoa(maxItems)+" elements")
			return
		}
		for i, e := range a {
			shape(p, index(path, i), e, t.Elem(), unknown)
		}
	case reflect.Map:
		if v == nil {
			return
		}
		m, isObj := v.(map[string]any)
		if !isObj {
			p.add(path, "must be an object, not "+jsonKind(v))
			return
		}
		if len(m) > maxItems {
			p.add(path, "must have at most "+strconv.Itoa(maxItems)+" members")
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			shape(p, field(path, k), m[k], t.Elem(), unknown)
		}
	case reflect.String:
		if _, isStr := v.(string); !isStr {
			p.add(path, "must be a string, not "+jsonKind(v))
		}
	case reflect.Bool:
		if _, isBool := v.(bool); !isBool {
			p.add(path, "must be true or false, not "+jsonKind(v))
		}
	case reflect.Int, reflect.Int64:
		n, isNum := v.(json.Number)
		if !isNum {
			p.add(path, "must be an integer, not "+jsonKind(v))
			return
		}
		if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
			p.add(path, "must be an integer of at most 64 bits")
		}
	default:
		p.add(path, "has a type the package cannot decode") // not reached: the sections' types are above
	}
}

// jsonFields maps the json names of t's exported fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// jsonKind names the JSON type of v (decoded with UseNumber).
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "a value of another kind"
}

// decodeStrict decodes data, a JSON document of at most limit bytes, into
// out (a pointer to a section's type), reporting every problem at once:
// size, syntax, nesting, duplicate keys, unknown fields and wrong types.
// It returns false if out could not be filled in; with unknown fields
// only, it fills out in (ignoring them), so that the value's rules can
// be checked too, and the problems stay in p.
func decodeStrict(p *problems, data []byte, limit int, out any) bool {
	if len(data) > limit {
		p.add("", "must be at most "+strconv.Itoa(limit)+" bytes of JSON")
		return false
	}
	if !scan(p, "", data, MaxDepth, fieldPaths) {
		return false
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		p.add("", "must be valid JSON: "+jsonMessage(err))
		return false
	}
	unknown := false
	shape(p, "", v, reflect.TypeOf(out).Elem(), &unknown)
	if p.typed {
		return false
	}
	if unknown {
		var err error
		if data, err = json.Marshal(v); err != nil {
			p.add("", "must fit the section: "+err.Error())
			return false
		}
	}
	if err := json.Unmarshal(data, out); err != nil {
		p.add("", "must fit the section: "+err.Error())
		return false
	}
	return true
}
