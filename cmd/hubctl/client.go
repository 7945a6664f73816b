package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// cli holds what every command needs: the output streams and, once flags are parsed, the
// connection settings.
type cli struct {
	stdout, stderr io.Writer
	server, apiKey string
	configPath     string
	caCert         string // PEM file of the CA that signed the hub's HTTPS certificate
	output         string
	http           *http.Client
}

// usageError is a mistake on the command line: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// apiError is an answer of the hub with a status of 400 or more.
type apiError struct {
	method, path string
	status       int
	msg          string
}

func (e *apiError) Error() string { return e.msg }

// missingEndpoint is true when the hub has no such route at all (rather than no such object).
func (e *apiError) missingEndpoint() bool {
	return e.status == http.StatusNotFound && strings.HasPrefix(e.msg, "no such endpoint") ||
		e.status == http.StatusNotImplemented || e.status == http.StatusMethodNotAllowed
}

// exit prints err and returns the exit code for it.
func (c *cli) exit(err error) int {
	var ue *usageError
	var ae *apiError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "hubctl: %s\nRun 'hubctl --help' for usage.\n", ue.msg)
		return exitUsage
	case errors.As(err, &ae) && ae.missingEndpoint():
		fmt.Fprintf(c.stderr, "hubctl: this hub does not offer %s %s (%d: %s)\n", ae.method, ae.path, ae.status, ae.msg)
		return exitAPI
	case errors.As(err, &ae) && ae.status == http.StatusNotFound:
		fmt.Fprintf(c.stderr, "hubctl: %s\n", ae.msg)
		return exitNotFound
	case errors.As(err, &ae):
		fmt.Fprintf(c.stderr, "hubctl: %s (%d)\n", ae.msg, ae.status)
		return exitAPI
	default:
		fmt.Fprintf(c.stderr, "hubctl: %v\n", err)
		return exitAPI
	}
}

// flags returns a FlagSet for a command with the global flags on it.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("hubctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.server, "server", "", "hub URL")
	fs.StringVar(&c.apiKey, "api-key", "", "API key")
	fs.StringVar(&c.configPath, "config", "", "config file")
	fs.StringVar(&c.caCert, "cacert", "", "CA certificate file for an HTTPS hub")
	fs.StringVar(&c.output, "o", "", "output format")
	fs.StringVar(&c.output, "output", "", "output format")
	return fs
}

// parse parses flags anywhere among the arguments (kubectl style) and returns the positional
// arguments; "--" ends the flags.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageErrorf("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// checkOutput validates -o against the formats a command supports; the first is the default.
func (c *cli) checkOutput(formats ...string) error {
	if c.output == "" {
		c.output = formats[0]
		return nil
	}
	for _, f := range formats {
		if c.output == f {
			return nil
		}
	}
	return usageErrorf("-o %s: want one of %s", c.output, strings.Join(formats, ", "))
}

// config is the YAML config file.
type config struct {
	Server string `yaml:"server"`
	APIKey string `yaml:"api_key"`
	CACert string `yaml:"cacert"`
}

// connect settles the server and key: flags, then HUB_URL/HUB_API_KEY, then the config file.
func (c *cli) connect() error {
	path := c.configPath
	if path == "" {
		path = os.Getenv("HUBCTL_CONFIG")
	}
	explicit := path != ""
	if path == "" {
		if dir, err := os.UserConfigDir(); err == nil {
			path = filepath.Join(dir, "tributary", "hubctl.yaml")
		}
	}
	var file config
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
				return usageErrorf("config %s: %v", path, err)
			}
		case explicit || !errors.Is(err, os.ErrNotExist):
			return usageErrorf("config: %v", err)
		}
	}
	first := func(vs ...string) string {
		for _, v := range vs {
			if v != "" {
				return v
			}
		}
		return ""
	}
	c.server = strings.TrimSuffix(first(c.server, os.Getenv("HUB_URL"), file.Server, "http://localhost:8080"), "/")
	if !strings.Contains(c.server, "://") {
		c.server = "http://" + c.server
	}
	c.apiKey = first(c.apiKey, os.Getenv("HUB_API_KEY"), file.APIKey)
	if c.apiKey == "" {
		return usageErrorf("no API key: use --api-key, HUB_API_KEY or api_key in %s", path)
	}
	if c.http == nil {
		transport, err := transportFor(first(c.caCert, os.Getenv("HUB_CACERT"), file.CACert))
		if err != nil {
			return err
		}
		c.http = &http.Client{Timeout: 60 * time.Second, Transport: transport}
	}
	return nil
}

// transportFor is the HTTP transport trusting the CA certificates in the PEM file caFile as
// well as the system's ("" : the system's only), for hubs whose certificate a private CA
// signed.
func transportFor(caFile string) (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if caFile == "" {
		return t, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, usageErrorf("--cacert: %v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, usageErrorf("--cacert %s: no PEM certificate in it", caFile)
	}
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
}

// request sends an API request; body is JSON-encoded unless it is []byte. It returns the
// response body of a 2xx answer, else an *apiError with the server's message.
func (c *cli) request(method, path string, body any) ([]byte, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.server+path, r)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("Accept", "application/json")
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the hub at %s: %v", c.server, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %v", method, path, err)
	}
	if resp.StatusCode >= 400 {
		return nil, newAPIError(method, path, resp.StatusCode, data)
	}
	return data, nil
}

func newAPIError(method, path string, status int, data []byte) *apiError {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return &apiError{method: method, path: path, status: status, msg: msg}
}

func unwrapURLError(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// getJSON requests and decodes into out.
func (c *cli) getJSON(path string, out any) error {
	data, err := c.request("GET", path, nil)
	if err != nil {
		return err
	}
	return decodeAnswer(data, out)
}

func decodeAnswer(data []byte, out any) error {
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("the hub's answer is not what hubctl expects: %v", err)
	}
	return nil
}
