// Command hubctl is the command-line client of the Tributary HTTP API, in the manner of kubectl
// and the nats CLI:
//
//	hubctl devices list|get|create|delete|rotate-token
//	hubctl tail 'devices/+/telemetry'
//	hubctl query <device> <field> --from -1h --every 1m --agg mean
//	hubctl rules|replay|sim list|get|create|delete|stop ...
//	hubctl canary list|get|create|results|delete
//	hubctl keys|tenants list|get|create ...; hubctl audit --since 1h
//
// The server and API key come from --server/--api-key, else HUB_URL/HUB_API_KEY, else the
// config file (~/.config/tributary/hubctl.yaml, or --config/HUBCTL_CONFIG). Exit codes: 0 ok,
// 1 server or API error (the server's message is printed), 2 usage error, 3 not found.
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes a script can rely on.
const (
	exitOK       = 0
	exitAPI      = 1
	exitUsage    = 2
	exitNotFound = 3
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `hubctl: command-line client of the Tributary hub's HTTP API

Usage:
  hubctl devices list [--type T] [--tag k:v]... [--status online|offline] [-q text] [--limit N]
  hubctl devices get <id>
  hubctl devices create <id> [--name N] [--type T] [--tag k=v]... [--lat X --lon Y] [--metadata JSON] [--tenant T]
  hubctl devices create -f devices.json|devices.csv     (one device or many; shows progress)
  hubctl devices delete <id>...
  hubctl devices rotate-token <id>
  hubctl tail <topic-filter>... [--fields a,b] [--since SEQ] [--count N] [-o pretty|json]
  hubctl query <device> <field> [--from -1h] [--to now] [--every 1m] [--agg mean] [-o table|csv|json] [--no-spark]
  hubctl rules list | get <name> | create -f rule.json | apply <name> -f rule.json | delete <name> | stats <name> | results <name>
  hubctl rules backtest [<name>] [--sql Q] [--compare-sql Q | --compare-rule R] [--from -1h] [--to T] [--devices a,b] [--scenario S]
  hubctl canary list | get <name> | create -f canary.yaml | apply <name> -f canary.yaml | results <name> [--since -1h] [--limit N] | delete <name>
  hubctl replay list | get <id> | create -f replay.json [--wait] | watch <id> | pause|resume|stop <id> | delete <id>
  hubctl sim list | get <id> | run|create -f fleet.yaml | stop <id> | delete <id>
  hubctl keys list | get <id> | revoke <id>
  hubctl keys create --name N --scopes devices:read,streams:read [--tenant T] [--expires 720h] [--description D]
  hubctl tenants list | get <name> | delete <name> | create|set <name> [--max-devices N] [--message-rate R] [--retention 720h]
  hubctl audit [--since 1h] [--type login|key|acl.denied|device.token] [--limit N]
  hubctl dev cluster [--hubs 2] [--dir ./devcluster] [--nats-port 4222] [--http-port 8080] [--mqtt-port 1883]
                     [--coap-port 5683] [--port-step 100] [--influx-url URL ...]
                     (3 NATS nodes and the hubs on loopback in this process, until Ctrl-C)

Global flags (anywhere on the line):
  --server URL     hub URL (env HUB_URL; default http://localhost:8080)
  --api-key KEY    API key (env HUB_API_KEY)
  --config FILE    config file (env HUBCTL_CONFIG; default ~/.config/tributary/hubctl.yaml)
  --cacert FILE    PEM CA certificate(s) to trust for an https:// hub besides the system's
                   (env HUB_CACERT)
  -o FORMAT        table (default), json, yaml or csv; tail: pretty or json

Config file (YAML):
  server: http://hub.example:8080
  api_key: tb_...
  cacert: /etc/tributary/ca.pem   # optional

Exit codes: 0 ok, 1 server or API error, 2 usage error, 3 not found.
`

// run is hubctl: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			fmt.Fprint(stderr, usage)
			return exitUsage
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, rest := args[0], args[1:]
	c := &cli{stdout: stdout, stderr: stderr}
	var err error
	switch cmd {
	case "devices", "device", "dev":
		if cmd == "dev" && len(rest) > 0 && rest[0] == "cluster" {
			err = c.devClusterCmd(rest[1:]) // hubctl dev cluster (devcluster.go)
			break
		}
		err = c.devices(rest)
	case "tail":
		err = c.tail(rest)
	case "query":
		err = c.query(rest)
	case "rules", "rule":
		if len(rest) > 0 && rest[0] == "backtest" {
			err = c.backtest(rest[1:])
			break
		}
		err = c.resource(resources["rules"], rest)
	case "replay", "replays":
		err = c.resource(resources["replays"], rest)
	case "sim", "sims", "simulations":
		err = c.resource(resources["simulations"], rest)
	case "canary", "canaries":
		err = c.canaries(rest)
	case "keys", "key":
		err = c.keys(rest)
	case "tenants", "tenant":
		err = c.tenants(rest)
	case "audit":
		err = c.audit(rest)
	default:
		err = usageErrorf("unknown command %q (want devices, tail, query, rules, canary, replay, sim, keys, tenants or audit)", cmd)
	}
	return c.exit(err)
}
