package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/hub"
)

// hubSettings maps every hubd setting's environment name (HUB_DATA_DIR, ...) to its flag name
// (data-dir): the yaml keys of hub.Config, which cmd/hubd's flags are named after.
func hubSettings() map[string]string {
	out := map[string]string{}
	t := reflect.TypeFor[hub.Config]()
	for i := range t.NumField() {
		if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" {
			out["HUB_"+strings.ToUpper(tag)] = strings.ReplaceAll(tag, "_", "-")
		}
	}
	return out
}

func checkEnv(t *testing.T, where string, env map[string]string) {
	t.Helper()
	known := hubSettings()
	for k := range env {
		if _, ok := known[k]; !ok {
			t.Errorf("%s: %s is not a hubd setting", where, k)
		}
	}
	for _, k := range []string{"HUB_NATS_URL", "HUB_API_KEY", "HUB_HTTP_ADDR", "HUB_MQTT_ADDR", "HUB_COAP_ADDR"} {
		if _, ok := env[k]; !ok {
			t.Errorf("%s: %s is not set; a clustered hub needs it", where, k)
		}
	}
}

func readDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// get walks a decoded YAML tree: keys for maps, ints for lists.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func TestKubernetesManifests(t *testing.T) {
	docs := readDocs(t, "kubernetes/hubd.yaml")
	byKind := map[string][]map[string]any{}
	for i, d := range docs {
		kind, _ := d["kind"].(string)
		if d["apiVersion"] == nil || kind == "" || get(d, "metadata", "name") == nil {
			t.Fatalf("document %d lacks apiVersion, kind or metadata.name: %v", i+1, d)
		}
		byKind[kind] = append(byKind[kind], d)
	}
	for _, k := range []string{"Namespace", "Secret", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service"} {
		if len(byKind[k]) == 0 {
			t.Errorf("no %s", k)
		}
	}
	if t.Failed() {
		return
	}

	env := map[string]string{}
	for k, v := range get(byKind["ConfigMap"][0], "data").(map[string]any) {
		env[k] = v.(string)
	}
	for k, v := range get(byKind["Secret"][0], "stringData").(map[string]any) {
		env[k] = v.(string)
	}
	checkEnv(t, "hubd.yaml ConfigMap+Secret", env)

	dep := byKind["Deployment"][0]
	labels := get(dep, "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range get(dep, "spec", "selector", "matchLabels").(map[string]any) {
		if labels[k] != v {
			t.Errorf("Deployment selector %s=%v does not match the pod labels %v", k, v, labels)
		}
	}
	c := get(dep, "spec", "template", "spec", "containers", 0)
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := get(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %v, want %s", probe, got, path)
		}
		if got := get(c, probe, "httpGet", "port"); got != "http" {
			t.Errorf("%s port %v, want the http port", probe, got)
		}
	}
	ports := map[string]string{} // name → "port/protocol"
	for _, p := range get(c, "ports").([]any) {
		ports[get(p, "name").(string)] = portOf(get(p, "containerPort")) + "/" + get(p, "protocol").(string)
	}
	// Each listener the environment configures is a declared container port.
	for k, name := range map[string]string{"HUB_HTTP_ADDR": "http", "HUB_MQTT_ADDR": "mqtt", "HUB_MQTT_WS_ADDR": "mqtt-ws", "HUB_COAP_ADDR": "coap", "HUB_COAPS_ADDR": "coaps"} {
		_, port, err := net.SplitHostPort(env[k])
		proto := "TCP"
		if strings.HasPrefix(name, "coap") {
			proto = "UDP"
		}
		if err != nil || ports[name] != port+"/"+proto {
			t.Errorf("%s=%q but container port %q is %q", k, env[k], name, ports[name])
		}
	}
	// Services select the pods and target declared ports with the right protocol.
	for _, s := range byKind["Service"] {
		for k, v := range get(s, "spec", "selector").(map[string]any) {
			if labels[k] != v {
				t.Errorf("Service %v selects %s=%v, not the hub pods", get(s, "metadata", "name"), k, v)
			}
		}
		for _, p := range get(s, "spec", "ports").([]any) {
			target, _ := get(p, "targetPort").(string)
			if want := ports[target]; want == "" || !strings.HasSuffix(want, "/"+get(p, "protocol").(string)) {
				t.Errorf("Service %v port %v targets %q (%s)", get(s, "metadata", "name"), get(p, "name"), target, want)
			}
		}
	}
	if sc := get(c, "securityContext", "readOnlyRootFilesystem"); sc != true {
		t.Errorf("container readOnlyRootFilesystem %v, want true", sc)
	}
	if get(dep, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("pod does not require a non-root user")
	}

	values := readDocs(t, "kubernetes/nats-values.yaml")
	if len(values) != 1 || get(values[0], "config", "cluster", "replicas") != 3 || get(values[0], "config", "jetstream", "enabled") != true {
		t.Errorf("nats-values.yaml: want a 3-node cluster with JetStream, got %v", values)
	}
}

func portOf(v any) string {
	b, _ := yaml.Marshal(v)
	return strings.TrimSpace(string(b))
}

func TestNATSServerConfig(t *testing.T) {
	opts, err := server.ProcessConfigFile("systemd/nats-server.conf")
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if !opts.JetStream || opts.ServerName != "n1" || opts.Cluster.Name != "tributary" || len(opts.Routes) != 3 || opts.Cluster.Port != 6222 {
		t.Errorf("nats-server.conf: JetStream %v, name %q, cluster %q on %d with %d routes; want JetStream, n1, tributary on 6222, 3 routes",
			opts.JetStream, opts.ServerName, opts.Cluster.Name, opts.Cluster.Port, len(opts.Routes))
	}
	if opts.LameDuckDuration == 0 {
		t.Error("nats-server.conf: no lame duck duration (the unit stops the server with SIGUSR2)")
	}
}

func TestSystemdUnits(t *testing.T) {
	env := map[string]string{}
	f, err := os.Open("systemd/hubd.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("hubd.env: %q is not KEY=value", line)
		}
		env[k] = v
	}
	checkEnv(t, "hubd.env", env)

	for file, want := range map[string][]string{
		"systemd/hubd.service":        {"[Unit]", "[Service]", "[Install]", "EnvironmentFile=/etc/tributary/hubd.env", "ExecStart=/usr/local/bin/hubd", "KillSignal=SIGTERM", "StateDirectory=tributary"},
		"systemd/nats-server.service": {"[Unit]", "[Service]", "[Install]", "ExecStart=/usr/local/bin/nats-server -c /etc/nats/nats-server.conf", "KillSignal=SIGUSR2"},
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := map[string]bool{}
		for _, l := range strings.Split(string(data), "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, w := range want {
			if !lines[w] {
				t.Errorf("%s: no line %q", file, w)
			}
		}
	}
}

// The Procfile's command lines are valid: nats-server's with its own flag parser, hubd's
// against hubd's settings.
func TestProcfile(t *testing.T) {
	data, err := os.ReadFile("dev/Procfile")
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	for _, f := range hubSettings() {
		flags[f] = true
	}
	var nats, hubs int
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, cmd, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("Procfile: %q is not name: command", line)
		}
		if inner, ok := strings.CutPrefix(cmd, "sh -c '"); ok { // a wait, then exec the program
			_, inner, _ = strings.Cut(inner, "exec ")
			cmd = strings.TrimSuffix(inner, "'")
		}
		args := strings.Fields(cmd)
		for i, a := range args {
			if a == `""` {
				args[i] = ""
			}
		}
		switch filepath.Base(args[0]) {
		case "nats-server":
			fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			opts, err := server.ConfigureOptions(fs, args[1:], func() {}, func() {}, func() {})
			if err != nil {
				t.Errorf("Procfile %s: %v", name, err)
				continue
			}
			if !opts.JetStream || opts.Cluster.Name != "tributary" || len(opts.Routes) != 3 || opts.ServerName != name {
				t.Errorf("Procfile %s: JetStream %v, cluster %q, %d routes, name %q", name, opts.JetStream, opts.Cluster.Name, len(opts.Routes), opts.ServerName)
			}
			nats++
		case "hubd":
			for i := 1; i < len(args); i += 2 {
				if !strings.HasPrefix(args[i], "--") || !flags[strings.TrimPrefix(args[i], "--")] || i+1 >= len(args) {
					t.Errorf("Procfile %s: %q is not a hubd flag with a value", name, args[i])
				}
			}
			hubs++
		default:
			t.Errorf("Procfile %s: unknown program %s", name, args[0])
		}
	}
	if nats != 3 || hubs < 2 {
		t.Errorf("Procfile starts %d NATS nodes and %d hubs; want 3 and 2+", nats, hubs)
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if strings.Count(s, "\nFROM ") < 2 || !strings.Contains(s, "CGO_ENABLED=0") || !strings.Contains(s, "\nUSER 65532") {
		t.Error("Dockerfile: want a multi-stage build of static binaries running as a non-root user")
	}
	for _, pkg := range []string{"./cmd/hubd", "./cmd/hubctl"} {
		if !strings.Contains(s, pkg) {
			t.Errorf("Dockerfile does not build %s", pkg)
		}
		if _, err := os.Stat(filepath.Join("..", pkg)); err != nil {
			t.Errorf("Dockerfile builds %s: %v", pkg, err)
		}
	}
	env := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "ENV "), "\\"))
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "HUB_") {
			env[k] = v
		}
	}
	known := hubSettings()
	for k := range env {
		if _, ok := known[k]; !ok {
			t.Errorf("Dockerfile: %s is not a hubd setting", k)
		}
	}
	if len(env) < 5 {
		t.Errorf("Dockerfile sets %d HUB_ variables, want the listeners and data dir", len(env))
	}
}
