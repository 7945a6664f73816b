//go:build linux

package devices_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	"golang.org/x/sys/unix"

	"github.com/tributary-iot/tributary/hub/hubtest"
)

// netnsChild marks the re-executed test binary running inside its own network namespace.
const netnsChild = "TRIBUTARY_TEST_NETNS"

// TestDiscoveryScanMulticast runs a real multicast scan: the test binary re-executes itself in
// a network namespace of its own (so the host's network is untouched), enables multicast on
// that namespace's loopback (IPv4) and creates a veth pair (IPv6: Linux does not loop IPv6
// multicast on lo), starts CoAP endpoints that join the All CoAP Nodes groups (224.0.1.187 on
// lo, ff02::fd on tb1) and a hub, and scans through the HTTP API. With CI=true it fails rather
// than skips when the namespace cannot be created.
func TestDiscoveryScanMulticast(t *testing.T) {
	if os.Getenv(netnsChild) == "1" {
		discoveryScanInNetns(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiscoveryScanMulticast$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsChild+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if os.Geteuid() != 0 {
		// Unprivileged: a user namespace in which we are root, with a network namespace.
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot create a network namespace for the multicast test: %v", err)
		}
		t.Skipf("cannot create a network namespace (not root, user namespaces off?): %v", err)
	}
	err := cmd.Wait()
	for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("scan test in the network namespace: %v", err)
	}
	if !strings.Contains(out.String(), "--- PASS: TestDiscoveryScanMulticast") {
		t.Fatal("the test did not run in the network namespace")
	}
}

// setLoopbackMulticast brings lo up with IFF_MULTICAST (what `ip link set lo up multicast on`
// does).
func setLoopbackMulticast(t *testing.T) *net.Interface {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("get lo flags: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_MULTICAST)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("set lo up and multicast: %v", err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Flags&net.FlagMulticast == 0 || lo.Flags&net.FlagUp == 0 {
		t.Fatalf("lo flags %v", lo.Flags)
	}
	return lo
}

// responder is a CoAP endpoint in a multicast group answering /.well-known/core.
func responder(t *testing.T, network, addr, group string, lo *net.Interface, links string) {
	t.Helper()
	l, err := coapnet.NewListenUDP(network, addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	if err := l.JoinGroup(lo, &net.UDPAddr{IP: net.ParseIP(group)}); err != nil {
		t.Fatalf("join %s on lo: %v", group, err)
	}
	r := mux.NewRouter()
	r.Handle("/.well-known/core", mux.HandlerFunc(func(w mux.ResponseWriter, _ *mux.Message) {
		_ = w.SetResponse(codes.Content, message.AppLinkFormat, bytes.NewReader([]byte(links)))
	}))
	s := udp.NewServer(options.WithMux(r))
	go s.Serve(l)
	t.Cleanup(func() {
		s.Stop()
		l.Close()
	})
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// vethPair creates a veth pair tb0–tb1 in the namespace, up, with IPv6 link-local addresses
// usable at once (duplicate address detection off). Linux does not loop IPv6 multicast back on
// lo, so the IPv6 group is tested across this link. It needs iproute2's ip.
func vethPair(t *testing.T) (*net.Interface, *net.Interface) {
	t.Helper()
	for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
		if err := os.WriteFile(f, []byte("0"), 0o644); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	for _, args := range [][]string{
		{"link", "add", "tb0", "type", "veth", "peer", "name", "tb1"},
		{"link", "set", "tb0", "up"},
		{"link", "set", "tb1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s (install iproute2)", strings.Join(args, " "), err, out)
		}
	}
	var tb0, tb1 *net.Interface
	eventually(t, 10*time.Second, func() bool {
		tb0, _ = net.InterfaceByName("tb0")
		tb1, _ = net.InterfaceByName("tb1")
		return hasLinkLocal(tb0) && hasLinkLocal(tb1) && tb0.Flags&net.FlagRunning != 0
	}, "veth pair without IPv6 link-local addresses")
	return tb0, tb1
}

func hasLinkLocal(iface *net.Interface) bool {
	if iface == nil {
		return false
	}
	addrs, _ := iface.Addrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() == nil && ip.IP.IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

func discoveryScanInNetns(t *testing.T) {
	lo := setLoopbackMulticast(t)
	_, tb1 := vethPair(t)
	port := freeUDPPort(t)
	responder(t, "udp4", fmt.Sprintf("0.0.0.0:%d", port), "224.0.1.187", lo,
		`</sensors/temp>;rt="temperature-c";if="sensor";obs,</ep>;ep="greenhouse-7"`)
	responder(t, "udp6", fmt.Sprintf("[::]:%d", port), "ff02::fd", tb1,
		`</light>;rt="light-lux";if="sensor"`)
	h := hubtest.Start(t)

	type discovered struct {
		Key         string `json:"key"`
		Address     string `json:"address"`
		SuggestedID string `json:"suggested_id"`
		Resources   []struct {
			Href  string            `json:"href"`
			Attrs map[string]string `json:"attrs"`
		} `json:"resources"`
	}
	var scan struct {
		Discovered []discovered `json:"discovered"`
		Error      string       `json:"error"`
	}
	start := time.Now()
	code := jsonCall(t, h, "POST", "/api/v1/discovery/scan", map[string]any{"port": port, "interfaces": []string{"lo", "tb0"}, "timeout": "1s"}, &scan)
	if code != 200 {
		t.Fatalf("scan: %d %s", code, scan.Error)
	}
	t.Logf("scan of 224.0.1.187 and ff02::fd on lo and tb0 took %v, found %d endpoints", time.Since(start).Round(time.Millisecond), len(scan.Discovered))
	if len(scan.Discovered) != 2 {
		t.Fatalf("discovered %+v; want the IPv4 and the IPv6 endpoint", scan.Discovered)
	}
	v4, v6 := scan.Discovered[0], scan.Discovered[1]
	if v4.Address != fmt.Sprintf("127.0.0.1:%d", port) || v4.SuggestedID != "greenhouse-7" || len(v4.Resources) != 2 ||
		v4.Resources[0].Href != "/sensors/temp" || v4.Resources[0].Attrs["rt"] != "temperature-c" {
		t.Errorf("IPv4 endpoint %+v", v4)
	}
	if !strings.HasPrefix(v6.Address, "[fe80::") || !strings.HasSuffix(v6.Address, fmt.Sprintf("%%tb0]:%d", port)) || len(v6.Resources) != 1 || v6.Resources[0].Attrs["rt"] != "light-lux" || !strings.HasPrefix(v6.SuggestedID, "coap-") {
		t.Errorf("IPv6 endpoint %+v", v6)
	}

	// Adopt the first with one call: the device exists with a token that works.
	var adopted struct {
		ID       string         `json:"id"`
		Token    string         `json:"token"`
		Type     string         `json:"type"`
		Metadata map[string]any `json:"metadata"`
		Error    string         `json:"error"`
	}
	if code := jsonCall(t, h, "POST", "/api/v1/discovery/"+v4.Key+"/adopt", map[string]any{"type": "greenhouse"}, &adopted); code != 201 || adopted.ID != "greenhouse-7" || adopted.Token == "" {
		t.Fatalf("adopt: %d %+v", code, adopted)
	}
	if adopted.Metadata["discovered_address"] != v4.Address || adopted.Type != "greenhouse" {
		t.Errorf("adopted device %+v", adopted)
	}
	mqttDevice(t, h, "greenhouse-7", "greenhouse-7", adopted.Token)
	var left struct{ Discovered []discovered }
	if jsonCall(t, h, "GET", "/api/v1/discovery", nil, &left); len(left.Discovered) != 1 || left.Discovered[0].Key != v6.Key {
		t.Errorf("still discovered after adoption: %+v", left.Discovered)
	}
	var e apiError
	if code := jsonCall(t, h, "POST", "/api/v1/discovery/"+v4.Key+"/adopt", nil, &e); code != 404 {
		t.Errorf("adopt twice: %d %s", code, e.Error)
	}
	if code := jsonCall(t, h, "POST", "/api/v1/discovery/"+v6.Key+"/adopt", map[string]any{"id": "greenhouse-7"}, &e); code != 409 {
		t.Errorf("adopt under a taken ID: %d %s", code, e.Error)
	}
	if code := jsonCall(t, h, "POST", "/api/v1/discovery/scan", map[string]any{"groups": []string{"10.0.0.1"}}, &e); code != 400 || !strings.Contains(e.Error, "multicast") {
		t.Errorf("scan of a unicast group: %d %s", code, e.Error)
	}
}
