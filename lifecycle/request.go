package lifecycle

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rtmx-ai/tenancy/internal/mailaddr"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
	"go.yaml.in/yaml/v3"
)

// MaxRequestSize is the largest provisioning request ParseRequest reads, in
// bytes. A request is a few hundred bytes; anything larger is refused
// before it is parsed.
const MaxRequestSize = 64 << 10

// Limits of the request's text fields, in bytes.
const (
	maxNameLen     = 200
	maxKMSAliasLen = 256 // AWS KMS alias name, "alias/" included
)

// Encryption says whose master key wraps a tenant's keysets
// (settings.encryption in a request).
type Encryption string

// The encryption settings of a request and the keys.KEKKind each maps to.
const (
	// EncryptionPlatform wraps the tenant's keysets with the platform's
	// shared master key (keys.KEKPlatform).
	EncryptionPlatform Encryption = "platform-managed"
	// EncryptionDedicated wraps them with a master key the platform makes
	// for this tenant alone, e.g. one HSM key per government tenant, and
	// destroys when the tenant is deprovisioned (keys.KEKTenant).
	EncryptionDedicated Encryption = "dedicated"
	// EncryptionCustomer wraps them with the customer's own AWS KMS key,
	// named by settings.kms_key_arn (BYOK, keys.KEKCustomer). The
	// platform never destroys it; the customer revokes it in their KMS.
	EncryptionCustomer Encryption = "customer-managed"
)

// Request is a validated provisioning request: the YAML of REQ-DEPLOY-004.
// Every field holds a value that passed the rules of ParseRequest; a Request
// made otherwise has not been checked.
type Request struct {
	// ID is the new tenant's ID (tenant.id).
	ID tenant.ID
	// Name is the tenant's display name (tenant.name): 1 to 200 bytes of
	// UTF-8, no control or format characters, no leading or trailing space.
	Name string
	// Tier is the tenant's service tier (tenant.tier).
	Tier tenant.Tier
	// Region is the region the tenant lives in (tenant.region), AWS-style:
	// two letters, an optional "-gov", a word and a digit ("us-gov-east-1",
	// "eu-west-2").
	Region string
	// AdminEmail is the bare address of the tenant's first administrator
	// (tenant.admin_email): "local@domain", ASCII, no display name,
	// comment, quoting or IP literal, at most 254 bytes.
	AdminEmail string
	// Settings are the tenant's settings (tenant.settings).
	Settings Settings
}

// Settings are the settings of a provisioning request.
type Settings struct {
	// Encryption says whose master key wraps the tenant's keysets
	// (settings.encryption, required).
	Encryption Encryption
	// KMSKeyARN is the customer's AWS KMS key or alias ARN
	// (settings.kms_key_arn): required with EncryptionCustomer, refused with
	// the others.
	KMSKeyARN string
}

// KeyOptions returns the options of keys.Manager.Provision for s: none for
// EncryptionPlatform, TenantKEK for EncryptionDedicated, and for
// EncryptionCustomer CustomerKEK = "aws-kms://" + KMSKeyARN, the URI form of
// Tink's AWS KMS client, which keys serves from Config.CustomerKMS only.
// Such a URI is never one keys refuses as a customer key (local:// or a
// PKCS#11 URI).
func (s Settings) KeyOptions() keys.ProvisionOptions {
	switch s.Encryption {
	case EncryptionDedicated:
		return keys.ProvisionOptions{TenantKEK: true}
	case EncryptionCustomer:
		return keys.ProvisionOptions{CustomerKEK: keys.URI("aws-kms://" + s.KMSKeyARN)}
	}
	return keys.ProvisionOptions{}
}

// ErrInvalidRequest is wrapped by every error for a provisioning request
// that ParseRequest refuses; the error is a *RequestError listing every
// problem found.
var ErrInvalidRequest = errors.New("lifecycle: invalid provisioning request")

// RequestError lists every problem found in a provisioning request. It
// wraps ErrInvalidRequest.
type RequestError struct {
	// Problems are the problems, in the order they were found.
	Problems []FieldProblem
}

// FieldProblem is one problem of a provisioning request.
type FieldProblem struct {
	// Path names the field in the YAML document ("tenant.admin_email",
	// "tenant.settings.kms_key_arn"); "" is the whole document. A key
	// that is not a plain lower-case name is shown quoted and escaped
	// (tenant["Bad\n"]).
	Path string
	// Line is the line of the document the problem is on, from 1; 0 when
	// it has none (a missing field, a document too large).
	Line int
	// Rule is the rule broken. It does not repeat the rejected value.
	Rule string
}

// String returns "path: rule (line n)".
func (p FieldProblem) String() string {
	var b strings.Builder
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Rule)
	if p.Line > 0 {
		b.WriteString(" (line ")
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(")")
	}
	return b.String()
}

// maxShownProblems bounds the problems RequestError.Error shows, so that a
// request of thousands of unknown fields does not make a message of
// megabytes.
const maxShownProblems = 10

// Error returns "lifecycle: invalid provisioning request: " followed by the
// problems, separated by "; ", on one line of printable ASCII: the first ten,
// then how many more there are (Problems has them all).
func (e *RequestError) Error() string {
	parts := make([]string, 0, min(len(e.Problems), maxShownProblems+1))
	for i, p := range e.Problems {
		if i == maxShownProblems {
			parts = append(parts, "and "+strconv.Itoa(len(e.Problems)-i)+" more")
			break
		}
		parts = append(parts, p.String())
	}
	return ErrInvalidRequest.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalidRequest) true.
func (e *RequestError) Unwrap() error { return ErrInvalidRequest }

// ParseRequest reads one provisioning request from r and validates it,
// reporting every problem at once in a *RequestError (errors.Is
// ErrInvalidRequest), or, if r fails, the read error.
//
// The document must be at most MaxRequestSize bytes (a larger one is
// refused unparsed), valid UTF-8 without a byte order mark or control
// characters other than tab, newline and carriage return, and hold exactly
// one YAML document of this shape:
//
//	tenant:
//	  id: "abc123"                 # tenant.ParseID
//	  name: "Acme Defense Corp"
//	  tier: "enterprise"           # tenant.ParseTier
//	  region: "us-gov-east-1"
//	  admin_email: "admin@acme.defense"
//	  settings:
//	    encryption: "customer-managed"  # platform-managed | dedicated | customer-managed
//	    kms_key_arn: "arn:aws-us-gov:kms:us-gov-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
//
// Decoding is strict: every field is required except kms_key_arn (where
// an empty value or null counts as absent); unknown fields, a key given
// twice, merge keys, anchors and aliases, explicit tags, and values that
// are not strings (a number, a boolean, a list, a mapping) are refused,
// each naming its field. Unquoted scalars are fine where YAML reads them
// as strings (id: abc123), not where it reads a number or boolean (name:
// 1984). The document is decoded into yaml/v3's node tree only, never into
// Go values, and each mapping is checked against its list of fields,
// which is what KnownFields would do, with the field path of each
// problem and all of them at once.
func ParseRequest(r io.Reader) (*Request, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxRequestSize+1))
	if err != nil {
		return nil, fmt.Errorf("lifecycle: read provisioning request: %w", err)
	}
	if len(data) > MaxRequestSize {
		return nil, docError("is larger than " + strconv.Itoa(MaxRequestSize) + " bytes (MaxRequestSize)")
	}
	if rule := checkText(data); rule != "" {
		return nil, docError(rule)
	}
	root, err := decodeOne(data)
	if err != nil {
		return nil, err
	}
	var v validator
	req := v.request(root)
	if len(v.problems) > 0 {
		return nil, &RequestError{Problems: v.problems}
	}
	return req, nil
}

func docError(rule string) *RequestError {
	return &RequestError{Problems: []FieldProblem{{Rule: rule}}}
}

// checkText checks the bytes of a document before YAML sees them.
func checkText(data []byte) string {
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return "must not start with a byte order mark"
	}
	if !utf8.Valid(data) {
		return "is not valid UTF-8 (at byte " + strconv.Itoa(invalidUTF8At(data)) + ")"
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return "is empty"
	}
	line := 1
	for _, c := range string(data) {
		switch {
		case c == '\n':
			line++
		case c == '\t' || c == '\r':
		case unicode.IsControl(c) || c == '\ufeff':
			return "holds a control character " + strconv.QuoteRuneToASCII(c) + " on line " + strconv.Itoa(line)
		}
	}
	return ""
}

func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// decodeOne decodes data as exactly one YAML document into a node tree,
// and refuses anchors and aliases before anything reads the tree, so no
// alias is ever expanded.
func decodeOne(data []byte) (_ *yaml.Node, err error) {
	defer func() {
		// The parser is not ours: whatever input makes it panic is a
		// request refused, never a panic in the caller.
		if recover() != nil {
			err = docError("is not valid YAML (the parser failed on it)")
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, docError("holds no YAML document")
		}
		return nil, docError("is not valid YAML: " + yamlMessage(err))
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, docError("must hold exactly one YAML document; what follows the first is not valid YAML: " + yamlMessage(err))
	default:
		return nil, &RequestError{Problems: []FieldProblem{{Line: extra.Line, Rule: "must hold exactly one YAML document, not several (remove the second '---')"}}}
	}
	if p := findAnchor(&doc); p != nil {
		return nil, &RequestError{Problems: []FieldProblem{*p}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, docError("holds no YAML document")
	}
	return doc.Content[0], nil
}

// findAnchor walks the whole tree (without recursion) for an anchor or an
// alias: a request has no use for either, and refusing them is the end of
// alias bombs.
func findAnchor(n *yaml.Node) *FieldProblem {
	var first *yaml.Node
	stack := []*yaml.Node{n}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if (n.Kind == yaml.AliasNode || n.Anchor != "") && (first == nil || n.Line < first.Line) {
			first = n
		}
		stack = append(stack, n.Content...)
	}
	if first == nil {
		return nil
	}
	return &FieldProblem{Line: first.Line, Rule: "must not use YAML anchors (&) or aliases (*)"}
}

// yamlMessage makes a YAML library error safe to print: one line of
// printable ASCII, without the library's prefix, truncated.
func yamlMessage(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	q := strconv.QuoteToASCII(s)
	q = q[1 : len(q)-1]
	if len(q) > 200 {
		q = q[:200] + "..."
	}
	return q
}

// validator collects the problems of one request.
type validator struct {
	problems []FieldProblem
}

func (v *validator) add(path string, n *yaml.Node, rule string) {
	line := 0
	if n != nil {
		line = n.Line
	}
	v.problems = append(v.problems, FieldProblem{Path: path, Line: line, Rule: rule})
}

var plainKey = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// join names the child key of path for messages: path.key, or
// path["key"] quoted and truncated when key is not a plain name.
func join(path, key string) string {
	if !plainKey.MatchString(key) {
		if len(key) > 40 {
			key = key[:40]
			for !utf8.ValidString(key) {
				key = key[:len(key)-1]
			}
			return path + "[" + strconv.QuoteToASCII(key) + "...]"
		}
		return path + "[" + strconv.QuoteToASCII(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!str":
			return "a string"
		}
		return "a value tagged " + strconv.QuoteToASCII(truncate(n.Tag, 40))
	}
	return "something else"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// mapping checks that n is a mapping with only the keys named in fields,
// each once, and returns the value of each key present.
func (v *validator) mapping(path string, n *yaml.Node, fields []string) (map[string]*yaml.Node, bool) {
	if n.Kind != yaml.MappingNode || (n.Tag != "" && n.Tag != "!!map") {
		v.add(path, n, "must be a mapping of "+strings.Join(fields, ", ")+", not "+kindName(n))
		return nil, false
	}
	got := make(map[string]*yaml.Node, len(fields))
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			v.add(join(path, k.Value), k, "is a YAML merge key: a request names each field itself")
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			v.add(path, k, "has a key that is "+kindName(k)+": keys must be field names")
			continue
		}
		p := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			v.add(p, k, "is given twice (first on line "+strconv.Itoa(first)+")")
			continue
		}
		seen[k.Value] = k.Line
		known := false
		for _, f := range fields {
			known = known || f == k.Value
		}
		if !known {
			v.add(p, k, "is not a known field (known: "+strings.Join(fields, ", ")+")")
			continue
		}
		got[k.Value] = val
	}
	return got, true
}

// str returns the string value of field key of m, or reports it missing or
// of the wrong type.
func (v *validator) str(path string, m map[string]*yaml.Node, key string, required bool) (string, *yaml.Node, bool) {
	p := join(path, key)
	n, ok := m[key]
	if !ok {
		if required {
			v.add(p, nil, "is required")
		}
		return "", nil, false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Style&yaml.TaggedStyle == 0 {
		// "key:" or "key: null" is an empty value.
		if required {
			v.add(p, n, "is required (it is empty)")
			return "", n, false
		}
		return "", n, true
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		v.add(p, n, "must be a string, not "+kindName(n)+" (quote it)")
		return "", n, false
	}
	if n.Style&yaml.TaggedStyle != 0 {
		v.add(p, n, "must not carry an explicit YAML tag")
		return "", n, false
	}
	if n.Value == "" && required {
		v.add(p, n, "is required (it is empty)")
		return "", n, false
	}
	return n.Value, n, true
}

var tenantFields = []string{"id", "name", "tier", "region", "admin_email", "settings"}
var settingsFields = []string{"encryption", "kms_key_arn"}

func (v *validator) request(root *yaml.Node) *Request {
	top, ok := v.mapping("", root, []string{"tenant"})
	if !ok {
		return nil
	}
	tn, ok := top["tenant"]
	if !ok {
		v.add("tenant", nil, "is required")
		return nil
	}
	const path = "tenant"
	m, ok := v.mapping(path, tn, tenantFields)
	if !ok {
		return nil
	}
	req := &Request{}
	if s, n, ok := v.str(path, m, "id", true); ok {
		id, err := tenant.ParseID(s)
		if err != nil {
			var ie *tenant.IDError
			rule := "is not a tenant ID"
			if errors.As(err, &ie) {
				rule = "is not a tenant ID: " + ie.Rule
			}
			v.add("tenant.id", n, rule)
		}
		req.ID = id
	}
	if s, n, ok := v.str(path, m, "name", true); ok {
		if rule := checkName(s); rule != "" {
			v.add("tenant.name", n, rule)
		}
		req.Name = s
	}
	if s, n, ok := v.str(path, m, "tier", true); ok {
		t, err := tenant.ParseTier(s)
		if err != nil {
			v.add("tenant.tier", n, "must be one of standard, enterprise, government")
		}
		req.Tier = t
	}
	if s, n, ok := v.str(path, m, "region", true); ok {
		if !regionPattern.MatchString(s) {
			v.add("tenant.region", n, "must be a region name like us-gov-east-1 ("+regionPattern.String()+")")
		}
		req.Region = s
	}
	if s, n, ok := v.str(path, m, "admin_email", true); ok {
		if rule := checkEmail(s); rule != "" {
			v.add("tenant.admin_email", n, rule)
		}
		req.AdminEmail = s
	}
	if sn, ok := m["settings"]; !ok {
		v.add("tenant.settings", nil, "is required")
	} else {
		req.Settings = v.settings("tenant.settings", sn)
	}
	return req
}

func (v *validator) settings(path string, n *yaml.Node) Settings {
	var s Settings
	m, ok := v.mapping(path, n, settingsFields)
	if !ok {
		return s
	}
	enc, encNode, encOK := v.str(path, m, "encryption", true)
	if encOK {
		switch e := Encryption(enc); e {
		case EncryptionPlatform, EncryptionDedicated, EncryptionCustomer:
			s.Encryption = e
		default:
			v.add(path+".encryption", encNode, "must be one of platform-managed, dedicated, customer-managed")
			encOK = false
		}
	}
	arnPath := path + ".kms_key_arn"
	arn, arnNode, arnOK := v.str(path, m, "kms_key_arn", false)
	_, arnGiven := m["kms_key_arn"]
	if arnOK && arn != "" {
		if rule := checkKMSKeyARN(arn); rule != "" {
			v.add(arnPath, arnNode, rule)
		}
		s.KMSKeyARN = arn
	}
	if encOK {
		switch {
		case s.Encryption == EncryptionCustomer && !arnGiven:
			v.add(arnPath, nil, "is required with encryption customer-managed")
		case s.Encryption == EncryptionCustomer && arnOK && arn == "":
			v.add(arnPath, arnNode, "is required with encryption customer-managed (it is empty)")
		case s.Encryption != EncryptionCustomer && arnGiven:
			v.add(arnPath, arnNode, "is allowed only with encryption customer-managed (this request has "+string(s.Encryption)+")")
		}
	}
	return s
}

// regionPattern is the grammar of Request.Region.
var regionPattern = regexp.MustCompile(`^[a-z]{2}(-gov)?-[a-z]+-[0-9]$`)

func checkName(s string) string {
	if len(s) > maxNameLen {
		return "must be at most " + strconv.Itoa(maxNameLen) + " bytes long"
	}
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	if strings.TrimSpace(s) != s {
		return "must not start or end with white space"
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return "must not contain control or format characters (found " + strconv.QuoteRuneToASCII(r) + ")"
		}
	}
	return ""
}

// checkEmail returns "" if s is a bare e-mail address, else the rule it
// breaks (internal/mailaddr, which lifecycle/invite applies too).
func checkEmail(s string) string { return mailaddr.Check(s) }

var (
	// kmsARN is an AWS KMS key or alias ARN: partition, region, account,
	// resource.
	kmsARN = regexp.MustCompile(`^arn:(aws|aws-us-gov|aws-cn):kms:([a-z]{2}(?:-gov)?-[a-z]+-[0-9]):([0-9]{12}):(.*)$`)
	kmsKey = regexp.MustCompile(`^key/(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	// kmsAlias is a customer alias; alias/aws/ names AWS-managed keys,
	// which no customer can grant to the platform.
	kmsAlias = regexp.MustCompile(`^alias/[a-zA-Z0-9/_-]+$`)
)

const arnRule = "must be an AWS KMS key or alias ARN (arn:aws[-us-gov|-cn]:kms:<region>:<12-digit account>:key/<uuid or mrk-id> or :alias/<name>)"

func checkKMSKeyARN(s string) string {
	lower := strings.ToLower(s)
	if !strings.HasPrefix(lower, "arn:") {
		return "has an unsupported scheme: " + arnRule
	}
	if strings.Count(s, ":") >= 2 && !strings.HasPrefix(lower, "arn:aws") {
		return "is not in an AWS partition: " + arnRule
	}
	if parts := strings.SplitN(s, ":", 4); len(parts) >= 3 && parts[2] != "kms" {
		return "names another service than KMS: " + arnRule
	}
	m := kmsARN.FindStringSubmatch(s)
	if m == nil {
		return arnRule
	}
	partition, region, resource := m[1], m[2], m[4]
	switch gov := strings.HasPrefix(region, "us-gov-"); {
	case partition == "aws-us-gov" && !gov,
		partition == "aws-cn" && !strings.HasPrefix(region, "cn-"),
		partition == "aws" && (gov || strings.HasPrefix(region, "cn-")):
		return "names a region outside its partition: " + arnRule
	}
	switch {
	case kmsKey.MatchString(resource):
	case kmsAlias.MatchString(resource) && len(resource) <= maxKMSAliasLen:
		if strings.HasPrefix(resource, "alias/aws/") {
			return "names an AWS-managed key (alias/aws/...), which cannot be granted to the platform"
		}
	default:
		return arnRule
	}
	return ""
}

// MarshalYAML implements yaml.Marshaler: yaml.Marshal(r) writes r as the
// document ParseRequest reads, every value double-quoted, so that it parses
// back to the same Request.
func (r *Request) MarshalYAML() (any, error) {
	q := func(s string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Style: yaml.DoubleQuotedStyle, Value: s}
	}
	m := func(kv ...*yaml.Node) *yaml.Node {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: kv}
	}
	key := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	settings := m(key("encryption"), q(string(r.Settings.Encryption)))
	if r.Settings.KMSKeyARN != "" {
		settings.Content = append(settings.Content, key("kms_key_arn"), q(r.Settings.KMSKeyARN))
	}
	return m(key("tenant"), m(
		key("id"), q(r.ID.String()),
		key("name"), q(r.Name),
		key("tier"), q(string(r.Tier)),
		key("region"), q(r.Region),
		key("admin_email"), q(r.AdminEmail),
		key("settings"), settings,
	)), nil
}
