package lifecycle_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/rtmx-ai/tenancy/lifecycle"
)

func ExampleParseRequest() {
	req, err := lifecycle.ParseRequest(strings.NewReader(`
tenant:
  id: "abc123"
  name: "Acme Defense Corp"
  tier: "enterprise"
  region: "us-gov-east-1"
  admin_email: "admin@acme.defense"
  settings:
    encryption: "customer-managed"
    kms_key_arn: "arn:aws-us-gov:kms:us-gov-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(req.ID, req.Tier, req.Region, req.AdminEmail)
	fmt.Println(string(req.Settings.KeyOptions().CustomerKEK))
	// Output:
	// abc123 enterprise us-gov-east-1 admin@acme.defense
	// aws-kms://arn:aws-us-gov:kms:us-gov-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
}

func ExampleRequestError() {
	_, err := lifecycle.ParseRequest(strings.NewReader(`
tenant:
  id: "Acme"
  name: "Acme"
  tier: "gold"
  region: "us-east-1"
  admin_email: "Admin <admin@acme.example>"
  settings:
    encryption: "platform-managed"
`))
	var re *lifecycle.RequestError
	if errors.As(err, &re) {
		for _, p := range re.Problems {
			fmt.Println(p.Path)
		}
	}
	fmt.Println(errors.Is(err, lifecycle.ErrInvalidRequest))
	// Output:
	// tenant.id
	// tenant.tier
	// tenant.admin_email
	// true
}
