package lifecycle_test

import (
	"bytes"
	"testing"

	"github.com/rtmx-ai/tenancy/lifecycle"
	"go.yaml.in/yaml/v3"
)

// BenchmarkParseRequest compares ParseRequest with the baseline of the same
// document decoded by yaml/v3 alone (KnownFields, into plain strings,
// without validation).
func BenchmarkParseRequest(b *testing.B) {
	data := []byte(seedYAML)
	b.Run("lifecycle", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := lifecycle.ParseRequest(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-yaml-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v struct {
				Tenant struct {
					ID         string `yaml:"id"`
					Name       string `yaml:"name"`
					Tier       string `yaml:"tier"`
					Region     string `yaml:"region"`
					AdminEmail string `yaml:"admin_email"`
					Settings   struct {
						Encryption string `yaml:"encryption"`
						KMSKeyARN  string `yaml:"kms_key_arn"`
					} `yaml:"settings"`
				} `yaml:"tenant"`
			}
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
	bomb := []byte(billionLaughs)
	b.Run("billion-laughs", func(b *testing.B) {
		for b.Loop() {
			if _, err := lifecycle.ParseRequest(bytes.NewReader(bomb)); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}
