package settings

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

const (
	// MaxSchemaBytes bounds the JSON Schema of the custom fields.
	MaxSchemaBytes = 64 << 10
	// MaxCustomFieldsBytes bounds the custom fields of one record that
	// [Settings.ValidateCustomFields] checks.
	MaxCustomFieldsBytes = 64 << 10
)

// draft2020 is the only $schema a custom-fields schema may name.
const draft2020 = "https://json-schema.org/draft/2020-12/schema"

// schemaLocation is where the compiler files a tenant's schema: a URN,
// so that no reference resolves against a file path or a host.
const schemaLocation = "urn:tenancy:custom-fields"

// errNoLoading is what the compiler's loader answers for every URL: a
// schema loads nothing (json-schema.org's meta-schemas are built into
// the library and do not reach the loader).
var errNoLoading = errors.New("loading schemas from URLs or files is refused")

type refuseLoader struct{}

func (refuseLoader) Load(string) (any, error) { return nil, errNoLoading }

// compileSchema checks raw, a custom-fields schema, reporting its
// problems under "schema", and compiles it.
func compileSchema(p *problems, raw []byte) (*jsonschema.Schema, bool) {
	const path = "schema"
	switch {
	case len(raw) == 0 || string(raw) == "null":
		p.add(path, "is required: a JSON Schema (draft 2020-12) of the custom fields")
		return nil, false
	case len(raw) > MaxSchemaBytes:
		p.add(path, "must be at most "+strconv.Itoa(MaxSchemaBytes)+" bytes")
		return nil, false
	}
	if !scan(p, path, raw, MaxDepth, fieldPaths) {
		return nil, false
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		p.add(path, "must be valid JSON")
		return nil, false
	}
	top, isObj := doc.(map[string]any)
	if !isObj {
		p.add(path, "must be a JSON Schema object")
		return nil, false
	}
	ok := true
	if s, has := top["$schema"]; has && s != draft2020 {
		p.add(field(path, "$schema"), "must be "+draft2020+" (draft 2020-12) or left out")
		ok = false
	}
	if top["type"] != "object" {
		p.add(field(path, "type"), `must be "object": the custom fields of a record are a JSON object`)
		ok = false
	}
	if !ok {
		return nil, false
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	c.AssertFormat()
	if err := c.AddResource(schemaLocation, doc); err != nil {
		p.add(path, "must be a valid JSON Schema: "+schemaMessage(err))
		return nil, false
	}
	sch, err := c.Compile(schemaLocation)
	if err != nil {
		var le *jsonschema.LoadURLError
		if errors.As(err, &le) {
			p.add(path, "must refer only inside itself ($ref \"#...\"): a reference to a URL or file is refused")
		} else {
			p.add(path, "must be a valid JSON Schema (draft 2020-12): "+schemaMessage(err))
		}
		return nil, false
	}
	return sch, true
}

// schemaMessage is the compiler's message, on one line of printable
// ASCII, without the schema's location, at most 300 bytes.
func schemaMessage(err error) string {
	s := strings.ReplaceAll(err.Error(), schemaLocation, "")
	s = strings.Join(strings.Fields(s), " ")
	q := strconv.QuoteToASCII(s)
	q = q[1 : len(q)-1]
	if len(q) > 300 {
		q = q[:300] + "..."
	}
	return q
}

// recordProblems turns the validation error of a record's custom fields
// into problems, one per failed leaf, at the JSON pointer of the value
// in the document ("" for the whole document).
func recordProblems(p *problems, err error) {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		p.add("", "does not match the tenant's custom-fields schema")
		return
	}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			if len(p.list) < 100 {
				p.add(pointer(e.InstanceLocation), kindMessage(e))
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
}

// pointer renders a location as a JSON pointer (RFC 6901).
func pointer(loc []string) string {
	if len(loc) == 0 {
		return ""
	}
	var b strings.Builder
	for _, s := range loc {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1"))
	}
	q := strconv.QuoteToASCII(b.String())
	return q[1 : len(q)-1]
}

// printer prints the library's messages in English.
var printer = message.NewPrinter(language.English)

// kindMessage is the rule of one failed leaf, escaped and bounded.
func kindMessage(e *jsonschema.ValidationError) string {
	s := e.ErrorKind.LocalizedString(printer)
	if kp := e.ErrorKind.KeywordPath(); len(kp) > 0 {
		s = strings.Join(kp, "/") + ": " + s
	}
	return schemaMessage(errors.New(s))
}
