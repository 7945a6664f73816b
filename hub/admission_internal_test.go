package hub

import (
	"context"
	"errors"
	"testing"

	"github.com/tributary-iot/tributary/auth"
	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols/admission"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// TestAdmissionSeesTenantsAndQuotas: the wiring gives admission control each device's tenant
// from the registry and each tenant's rate quotas from the tenants bucket, so a tenant's quota
// holds for its devices together and leaves the default tenant alone. (End to end over the
// API once devices can be assigned to tenants there.)
func TestAdmissionSeesTenantsAndQuotas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := streamstest.Logger(t)
	bus := streamstest.New(t)
	reg, err := devices.New(ctx, bus.JetStream(), devices.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := devices.NewManager(ctx, bus.JetStream(), reg, bus, devices.ManagerConfig{}, log)
	if err != nil {
		t.Fatal(err)
	}
	tenants, err := auth.NewTenants(ctx, bus.JetStream(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tenants.Create(ctx, auth.TenantSpec{Name: "acme", Quotas: auth.Quotas{MessageRate: 0.1, MessageBurst: 2}}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []devices.Device{{ID: "a1", Tenant: "acme"}, {ID: "a2", Tenant: "acme"}, {ID: "b1"}} {
		if _, _, err := reg.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	ctl, err := admission.New(admission.Config{}, deviceProfiles{reg, mgr.Types, tenants}, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := ctl.TenantOf("a1"); got != "acme" {
		t.Errorf("TenantOf(a1) = %q, want acme", got)
	}
	if got := ctl.TenantOf("b1"); got != devices.DefaultTenant {
		t.Errorf("TenantOf(b1) = %q, want %q", got, devices.DefaultTenant)
	}
	publish := func(id string) error { return ctl.Publish(ctx, "test", id, 10, false) }
	if err := errors.Join(publish("a1"), publish("a2")); err != nil {
		t.Fatalf("acme's burst of 2: %v", err)
	}
	if err := publish("a1"); !errors.Is(err, admission.ErrQuotaExceeded) {
		t.Errorf("third acme message within its burst of 2 at 0.1/s: %v, want quota exceeded", err)
	}
	for range 5 {
		if err := publish("b1"); err != nil {
			t.Errorf("default tenant without quotas: %v", err)
		}
	}
}
