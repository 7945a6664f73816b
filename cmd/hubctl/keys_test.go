package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// TestKeysTenantsAudit drives hubctl keys, tenants and audit against a real hub: a tenant is
// created, a key for it printed once and usable, listed without its secret, revoked (then
// refused with exit code 1), and the audit log shows the key's creation and revocation.
func TestKeysTenantsAudit(t *testing.T) {
	isolate(t)
	h := hubtest.Start(t)
	ctl := func(args ...string) (string, string, int) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(args, "--server", h.URL, "--api-key", hubtest.APIKey), &out, &errb)
		return out.String(), errb.String(), code
	}
	if out, errs, code := ctl("tenants", "create", "acme", "--max-devices", "5", "--retention", "720h"); code != 0 || !strings.Contains(out, "acme") || !strings.Contains(out, "720h") {
		t.Fatalf("tenants create: %d %s %s", code, out, errs)
	}
	out, errs, code := ctl("keys", "create", "--name", "ops", "--scopes", "devices:read,streams:read", "--tenant", "acme", "--expires", "24h")
	secret := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(secret, "tbk_") || !strings.Contains(errs, "shown only now") {
		t.Fatalf("keys create: %d %q %q", code, out, errs)
	}
	id := secret[4:20]
	if out, errs, code := ctl("devices", "create", "p7", "--tenant", "acme"); code != 0 || !strings.Contains(out, "p7") {
		t.Fatalf("devices create --tenant: %d %s %s", code, out, errs)
	}
	var o, e bytes.Buffer
	if code := run([]string{"devices", "list", "--server", h.URL, "--api-key", secret}, &o, &e); code != 0 || !strings.Contains(o.String(), "p7") {
		t.Fatalf("devices list with the new key: %d %s %s", code, o.String(), e.String())
	}
	if out, _, code := ctl("keys", "list"); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "devices:read,streams:read") || !strings.Contains(out, "acme") || strings.Contains(out, secret) {
		t.Fatalf("keys list: %d %s", code, out)
	}
	if out, _, code := ctl("tenants", "list"); code != 0 || !strings.Contains(out, "acme") || !strings.Contains(out, "default") {
		t.Fatalf("tenants list: %d %s", code, out)
	}
	if out, errs, code := ctl("keys", "create", "--name", "x", "--scopes", "devices:fly"); code != 1 || !strings.Contains(errs, `unknown scope \"devices:fly\"`) && !strings.Contains(errs, `unknown scope "devices:fly"`) {
		t.Fatalf("keys create with a bad scope: %d %s %s", code, out, errs)
	}
	if out, _, code := ctl("keys", "revoke", id); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("keys revoke: %d %s", code, out)
	}
	o.Reset()
	e.Reset()
	if code := run([]string{"devices", "list", "--server", h.URL, "--api-key", secret}, &o, &e); code != 1 || !strings.Contains(e.String(), "invalid API key") {
		t.Fatalf("devices list with the revoked key: %d %s %s", code, o.String(), e.String())
	}
	if _, _, code := ctl("keys", "get", id); code != 3 {
		t.Fatalf("keys get of a revoked key: exit %d, want 3 (not found)", code)
	}
	hubtest.Eventually(t, 5*time.Second, func() bool {
		out, _, code := ctl("audit", "--type", "key")
		return code == 0 && strings.Contains(out, "key.created") && strings.Contains(out, "key.revoked") && strings.Contains(out, "key:"+id)
	}, "audit does not show the key's creation and revocation")
	// acme still owns device p7: not deleted; once p7 is gone, deleted.
	if _, errs, code := ctl("tenants", "delete", "acme"); code != 1 || !strings.Contains(errs, `still owns 1 device`) {
		t.Fatalf("tenants delete of a tenant with a device: %d %s; want 1 and what it owns", code, errs)
	}
	if _, errs, code := ctl("devices", "delete", "p7"); code != 0 {
		t.Fatalf("devices delete p7: %d %s", code, errs)
	}
	if out, errs, code := ctl("tenants", "delete", "acme"); code != 0 || !strings.Contains(out, "tenant acme deleted") {
		t.Fatalf("tenants delete: %d %s %s", code, out, errs)
	}
	if _, _, code := ctl("tenants", "get", "acme"); code != 3 {
		t.Fatalf("tenants get of a deleted tenant: exit %d, want 3", code)
	}
	if _, errs, code := ctl("keys", "frobnicate"); code != 2 || !strings.Contains(errs, "unknown subcommand") {
		t.Fatalf("keys frobnicate: %d %s", code, errs)
	}
}
