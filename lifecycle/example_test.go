package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	gcblob "gocloud.dev/blob"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
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

// ExampleNew wires a Lifecycle: the control plane, the steps a platform
// uses, in REQ-DEPLOY-004's order, a backup, and the platform's audit
// trail; then provisions a tenant from its request, resumes it after a
// crash, and deprovisions it. (Compiled, not run: it needs the platform's
// services; lifecycle's tests run the same against real ones.)
func ExampleNew() {
	var (
		ctx      = context.Background()
		admin    *store.Admin    // store.OpenAdmin
		km       *keys.Manager   // keys.New over admin.Keysets()
		objects  *blob.Buckets   // blob.Open
		platform *audit.Platform // audit.NewPlatform
		inviter  *invite.Inviter // invite.New, after invite.Install
		cluster  *kube.Cluster   // kube.New(kube.DefaultConfig(client, dyn))
		backups  *gcblob.Bucket  // the backup bucket
	)
	routes, err := lifecycle.NewRoutesStep(admin, "svc/rtmx-api", "{{.DNSLabel}}.rtmx.example")
	if err != nil {
		log.Fatal(err)
	}
	lc, err := lifecycle.New(ctx, lifecycle.Config{
		Admin: admin,
		Steps: []lifecycle.Step{
			&lifecycle.PlacementStep{Admin: admin, GovernmentCluster: "gov-1"}, // 2
			&lifecycle.KeysStep{Keys: km, Store: admin.Keysets()},              // 3
			&lifecycle.ObjectsStep{Buckets: objects},
			&lifecycle.KubeStep{Group: cluster.Namespace()}, // 4
			&lifecycle.KubeStep{Group: cluster.Resources()}, // 5
			routes, // 6
			&lifecycle.KubeStep{Group: cluster.Ingress()},
			&lifecycle.InvitationStep{Inviter: inviter},            // 7
			&lifecycle.AuditStep{Admin: admin, Platform: platform}, // 8
		},
		Backup: &lifecycle.Backup{Admin: admin, Role: "tenancy_backup", Bucket: backups, Keys: km,
			KeyID: tenant.MustParseID("backups"), Objects: objects},
		Audit: platform,
		Actor: "tenantctl",
	})
	if err != nil {
		log.Fatal(err)
	}

	f, err := os.Open("tenant.yaml")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	req, err := lifecycle.ParseRequest(f)
	if err != nil {
		log.Fatal(err) // a *RequestError lists every problem
	}
	run, err := lc.Provision(ctx, req)
	var re *lifecycle.RunError
	switch {
	case errors.As(err, &re) && re.Compensated:
		log.Fatalf("tenant %s failed and was undone: %v", req.ID, err)
	case err != nil:
		// Interrupted, or compensation did not finish: the run is open.
		run, err = lc.Resume(ctx, req.ID)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(run.State)

	if _, err := lc.Deprovision(ctx, req.ID); err != nil {
		log.Fatal(err) // the run stays open: lc.Resume continues it
	}
}
