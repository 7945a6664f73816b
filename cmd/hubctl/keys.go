package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Scoped API keys, tenants and the audit log.

type apiKey struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Scopes      []string   `json:"scopes"`
	Tenant      string     `json:"tenant,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	Secret      string     `json:"secret,omitempty"`
}

func (k apiKey) row() []string {
	exp := "-"
	if k.ExpiresAt != nil {
		exp = k.ExpiresAt.Format(time.RFC3339)
	}
	return []string{k.ID, k.Name, strings.Join(k.Scopes, ","), orDash(k.Tenant), exp}
}

var keyHeader = []string{"ID", "NAME", "SCOPES", "TENANT", "EXPIRES"}

// keys: hubctl keys list | get <id> | create --name N --scopes a,b [--tenant T]
// [--expires 720h|RFC3339] [--description D] | revoke <id>.
func (c *cli) keys(args []string) error {
	if len(args) == 0 {
		return usageErrorf("keys: want list, get, create or revoke")
	}
	verb, args := args[0], args[1:]
	fs := c.flags("keys " + verb)
	name := fs.String("name", "", "key name (create)")
	desc := fs.String("description", "", "description (create)")
	scopes := fs.String("scopes", "", "comma-separated scopes (create), e.g. devices:read,streams:read")
	tenant := fs.String("tenant", "", "confine the key to one tenant (create)")
	expires := fs.String("expires", "", "expiry: a duration from now (720h) or an RFC 3339 time (create)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := c.checkOutput("table", "json", "yaml"); err != nil {
		return err
	}
	switch verb {
	case "list", "ls", "get", "revoke", "delete", "rm", "create":
	default:
		return usageErrorf("keys %s: unknown subcommand (want list, get, create or revoke)", verb)
	}
	if (verb == "get" || verb == "revoke" || verb == "delete" || verb == "rm") && len(pos) != 1 {
		return usageErrorf("keys %s: want one key ID", verb)
	}
	body := map[string]any{}
	if verb == "create" {
		if *name == "" || *scopes == "" {
			return usageErrorf("keys create: want --name and --scopes")
		}
		body["name"], body["scopes"] = *name, strings.Split(*scopes, ",")
		if *desc != "" {
			body["description"] = *desc
		}
		if *tenant != "" {
			body["tenant"] = *tenant
		}
		if *expires != "" {
			t, err := parseExpiry(*expires, time.Now())
			if err != nil {
				return err
			}
			body["expires_at"] = t
		}
	}
	if err := c.connect(); err != nil {
		return err
	}
	switch verb {
	case "list", "ls":
		var out struct {
			Keys []apiKey `json:"keys"`
		}
		if err := c.getJSON("/api/v1/keys", &out); err != nil {
			return err
		}
		return c.print(out, keyHeader, rowsOf(out.Keys))
	case "get":
		return getOne[apiKey](c, "/api/v1/keys/"+url.PathEscape(pos[0]), keyHeader)
	case "create":
		data, err := c.request("POST", "/api/v1/keys", body)
		if err != nil {
			return err
		}
		var k apiKey
		if err := decodeAnswer(data, &k); err != nil {
			return err
		}
		if c.output == "table" {
			fmt.Fprintf(c.stderr, "key %s created; its secret is shown only now:\n", k.ID)
			fmt.Fprintln(c.stdout, k.Secret)
			return nil
		}
		return c.printRaw(data)
	default: // revoke
		if _, err := c.request("DELETE", "/api/v1/keys/"+url.PathEscape(pos[0]), nil); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "key %s revoked\n", pos[0])
		return nil
	}
}

// parseExpiry reads a duration from now or an RFC 3339 time.
func parseExpiry(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, usageErrorf("--expires: want a duration such as 720h or an RFC 3339 time, got %q", v)
}

type tenant struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Quotas      map[string]any `json:"quotas"`
	Devices     *int           `json:"devices,omitempty"`
}

func (t tenant) row() []string {
	n := "-"
	if t.Devices != nil {
		n = strconv.Itoa(*t.Devices)
	}
	q := func(k string) string {
		if v, ok := t.Quotas[k]; ok {
			return fmt.Sprint(v)
		}
		return "-"
	}
	return []string{t.Name, n, q("max_devices"), q("message_rate"), q("retention")}
}

var tenantHeader = []string{"NAME", "DEVICES", "MAX_DEVICES", "MESSAGE_RATE", "RETENTION"}

// tenants: hubctl tenants list | get <name> | delete <name> | create|set <name> [--max-devices N]
// [--message-rate R] [--message-burst N] [--bytes-rate R] [--retention D] [--description D].
func (c *cli) tenants(args []string) error {
	if len(args) == 0 {
		return usageErrorf("tenants: want list, get, create, set or delete")
	}
	verb, args := args[0], args[1:]
	fs := c.flags("tenants " + verb)
	desc := fs.String("description", "", "description")
	maxDevices := fs.Int("max-devices", 0, "most devices the tenant may have (0: no limit)")
	rate := fs.Float64("message-rate", 0, "messages/s over the tenant's devices (0: no limit)")
	burst := fs.Int("message-burst", 0, "burst of the message rate")
	bytesRate := fs.Float64("bytes-rate", 0, "payload bytes/s over the tenant's devices (0: no limit)")
	retention := fs.String("retention", "", "how long the tenant's data is kept, e.g. 720h")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := c.checkOutput("table", "json", "yaml"); err != nil {
		return err
	}
	switch verb {
	case "list", "ls":
	case "get", "create", "set", "delete", "rm":
		if len(pos) != 1 {
			return usageErrorf("tenants %s: want one tenant name", verb)
		}
	default:
		return usageErrorf("tenants %s: unknown subcommand (want list, get, create, set or delete)", verb)
	}
	quotas := map[string]any{}
	if *maxDevices > 0 {
		quotas["max_devices"] = *maxDevices
	}
	if *rate > 0 {
		quotas["message_rate"] = *rate
	}
	if *burst > 0 {
		quotas["message_burst"] = *burst
	}
	if *bytesRate > 0 {
		quotas["bytes_rate"] = *bytesRate
	}
	if *retention != "" {
		quotas["retention"] = *retention
	}
	if err := c.connect(); err != nil {
		return err
	}
	switch verb {
	case "list", "ls":
		var out struct {
			Tenants []tenant `json:"tenants"`
		}
		if err := c.getJSON("/api/v1/tenants", &out); err != nil {
			return err
		}
		return c.print(out, tenantHeader, rowsOf(out.Tenants))
	case "get":
		return getOne[tenant](c, "/api/v1/tenants/"+url.PathEscape(pos[0]), tenantHeader)
	case "delete", "rm":
		if _, err := c.request("DELETE", "/api/v1/tenants/"+url.PathEscape(pos[0]), nil); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "tenant %s deleted\n", pos[0])
		return nil
	default:
		body := map[string]any{"name": pos[0], "description": *desc, "quotas": quotas}
		method, path := "POST", "/api/v1/tenants"
		if verb == "set" {
			method, path = "PUT", "/api/v1/tenants/"+url.PathEscape(pos[0])
		}
		data, err := c.request(method, path, body)
		if err != nil {
			return err
		}
		var t tenant
		if err := decodeAnswer(data, &t); err != nil {
			return err
		}
		return c.print(t, tenantHeader, [][]string{t.row()})
	}
}

type auditEvent struct {
	Time      time.Time `json:"time"`
	Type      string    `json:"type"`
	Protocol  string    `json:"protocol"`
	Source    string    `json:"source"`
	Principal string    `json:"principal"`
	Tenant    string    `json:"tenant"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason"`
	Object    string    `json:"object"`
	Count     int       `json:"count"`
}

// audit: hubctl audit [--since 1h|RFC3339] [--type login|key|acl.denied] [--limit N].
func (c *cli) audit(args []string) error {
	fs := c.flags("audit")
	since := fs.String("since", "", "from this time or this long ago (1h)")
	typ := fs.String("type", "", "event type or family: login, key, key.created, acl.denied, device.token, tenant")
	limit := fs.Int("limit", 0, "at most this many (newest)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("audit: unexpected argument %q", pos[0])
	}
	if err := c.checkOutput("table", "json", "yaml", "csv"); err != nil {
		return err
	}
	q := url.Values{}
	if *since != "" {
		q.Set("since", *since)
	}
	if *typ != "" {
		q.Set("type", *typ)
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	if err := c.connect(); err != nil {
		return err
	}
	var out struct {
		Events []auditEvent `json:"events"`
	}
	if err := c.getJSON("/api/v1/audit?"+q.Encode(), &out); err != nil {
		return err
	}
	rows := make([][]string, len(out.Events))
	for i, e := range out.Events {
		reason := e.Reason
		if e.Object != "" {
			reason = e.Object + ": " + reason
		}
		rows[i] = []string{e.Time.Format(time.RFC3339), e.Type, e.Outcome, orDash(e.Protocol), orDash(e.Source), orDash(e.Principal), orDash(e.Tenant), reason}
	}
	return c.print(out, []string{"TIME", "TYPE", "OUTCOME", "PROTOCOL", "SOURCE", "PRINCIPAL", "TENANT", "REASON"}, rows)
}

// tableRow is an answer that prints as one table row.
type tableRow interface{ row() []string }

func rowsOf[T tableRow](items []T) [][]string {
	rows := make([][]string, len(items))
	for i, it := range items {
		rows[i] = it.row()
	}
	return rows
}

// getOne reads one object at path and prints it as a one-row table (or JSON/YAML).
func getOne[T tableRow](c *cli, path string, header []string) error {
	var v T
	if err := c.getJSON(path, &v); err != nil {
		return err
	}
	return c.print(v, header, [][]string{v.row()})
}
