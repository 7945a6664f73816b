package hub

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

const apiKeyFile = "api-key"

// loadOrCreateAPIKey returns the configured key, or the one kept in dataDir, or a new one that it
// writes there with mode 0600 and logs once so the operator can copy it.
func loadOrCreateAPIKey(configured, dataDir string, log *slog.Logger) (string, error) {
	if configured != "" {
		return configured, nil
	}
	path := filepath.Join(dataDir, apiKeyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		if key := strings.TrimSpace(string(data)); key != "" {
			return key, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read API key: %w", err)
	}
	b := make([]byte, 24)
	rand.Read(b)
	key := "tb_" + base64.RawURLEncoding.EncodeToString(b)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write API key: %w", err)
	}
	log.Info("generated admin API key; it is shown only this once and kept in "+path, "api_key", key)
	return key, nil
}
