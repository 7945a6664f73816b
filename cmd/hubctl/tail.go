package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
)

// liveMessage is a message of the live stream (the API's Message).
type liveMessage struct {
	Seq           uint64            `json:"seq"`
	ID            string            `json:"id"`
	Device        string            `json:"device,omitempty"`
	Topic         string            `json:"topic"`
	EventTime     time.Time         `json:"event_time"`
	ReceivedAt    time.Time         `json:"received_at"`
	ContentType   string            `json:"content_type,omitempty"`
	Protocol      string            `json:"protocol,omitempty"`
	ReplayID      string            `json:"replay_id,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64 []byte            `json:"payload_base64,omitempty"`
	Meta          map[string]string `json:"meta,omitempty"`
}

// tail follows GET /api/v1/stream. It reconnects after a dropped connection, resuming after the
// last message it printed, so nothing is missed within the hub's retention. It ends on Ctrl-C or
// after --count messages.
func (c *cli) tail(args []string) error {
	fs := c.flags("tail")
	fields := fs.String("fields", "", "only these payload fields (comma-separated; * for all, flattened)")
	since := fs.String("since", "", "start after this message sequence (0: everything retained)")
	count := fs.Int("count", 0, "stop after this many messages")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("tail: want one or more topic filters, e.g. 'devices/+/telemetry' or '#'")
	}
	if err := c.checkOutput("pretty", "json"); err != nil {
		return err
	}
	if *since != "" {
		if _, err := strconv.ParseUint(*since, 10, 64); err != nil {
			return usageErrorf("--since: want a message sequence, got %q", *since)
		}
	}
	if err := c.connect(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	stream := &http.Client{Transport: c.http.Transport} // no timeout: the stream is long-lived
	last := *since
	printed := 0
	backoff := 500 * time.Millisecond
	for {
		q := url.Values{"topic": pos}
		if *fields != "" {
			q.Set("fields", *fields)
		}
		if last != "" {
			q.Set("since", last)
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", c.server+"/api/v1/stream?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := stream.Do(req)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if printed == 0 && last == *since {
				return fmt.Errorf("cannot reach the hub at %s: %v", c.server, unwrapURLError(err))
			}
			fmt.Fprintf(c.stderr, "hubctl: stream interrupted (%v); reconnecting\n", unwrapURLError(err))
		} else if resp.StatusCode != http.StatusOK {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return newAPIError("GET", "/api/v1/stream", resp.StatusCode, data)
		} else {
			backoff = 500 * time.Millisecond
			done, err := c.readStream(resp.Body, &last, &printed, *count)
			resp.Body.Close()
			if done || ctx.Err() != nil {
				return err
			}
			fmt.Fprintln(c.stderr, "hubctl: stream ended; reconnecting")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// readStream prints events until the stream ends or count messages are printed (done).
func (c *cli) readStream(body io.Reader, last *string, printed *int, count int) (done bool, err error) {
	br := bufio.NewReader(body)
	var event, id string
	var data strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return false, nil
		}
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "event":
				event = v
			case "id":
				id = v
			case "data":
				data.WriteString(v)
			}
			continue
		}
		switch event {
		case "message":
			if err := c.printMessage([]byte(data.String())); err != nil {
				return true, err
			}
			if id != "" {
				*last = id
			}
			*printed++
			if count > 0 && *printed >= count {
				return true, nil
			}
		case "skipped":
			var s struct {
				Skipped  int    `json:"skipped"`
				FirstSeq uint64 `json:"first_seq"`
				LastSeq  uint64 `json:"last_seq"`
			}
			json.Unmarshal([]byte(data.String()), &s)
			fmt.Fprintf(c.stderr, "hubctl: the hub skipped %d messages (seq %d-%d) because this client was too slow; rerun with --since %d to get them\n",
				s.Skipped, s.FirstSeq, s.LastSeq, s.FirstSeq-1)
		case "error":
			var msg string
			json.Unmarshal([]byte(data.String()), &msg)
			return true, errors.New("stream: " + msg)
		}
		event, id = "", ""
		data.Reset()
	}
}

func (c *cli) printMessage(data []byte) error {
	if c.output == "json" {
		_, err := fmt.Fprintf(c.stdout, "%s\n", data)
		return err
	}
	var m liveMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("stream: undecodable message: %v", err)
	}
	payload := string(m.Payload)
	if m.Payload == nil && m.PayloadBase64 != nil {
		payload = fmt.Sprintf("(%d bytes, %s)", len(m.PayloadBase64), orDash(m.ContentType))
		if printable(m.PayloadBase64) {
			payload = strconv.Quote(string(m.PayloadBase64))
		}
	}
	via := ""
	if m.Protocol != "" {
		via = " via " + m.Protocol
	}
	_, err := fmt.Fprintf(c.stdout, "%s  %s%s  %s\n", m.EventTime.Local().Format("2006-01-02 15:04:05.000"), m.Topic, via, payload)
	return err
}

func printable(b []byte) bool {
	for _, r := range string(b) {
		if r < 0x20 || r == 0xfffd {
			return false
		}
	}
	return len(b) > 0
}
