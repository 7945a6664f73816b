package rules

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/canary"
)

// Bucket names.
const (
	// DefinitionBucket holds rule definitions (JSON Rule), keyed by name.
	DefinitionBucket = "rules"
	// StateBucket holds each rule's checkpoint, keyed by name (large ones in chunks under
	// "<name>.c<generation>.<i>").
	StateBucket = "rules-state"
)

// checkpoint is a rule's state at a point of its input.
type checkpoint struct {
	Incarnation string   `json:"incarnation"`
	Fingerprint string   `json:"fingerprint"`
	LastSeq     uint64   `json:"last_seq"` // input processed through this stream sequence
	OutSeq      uint64   `json:"out_seq"`  // newest acknowledged output
	Fired       []string `json:"fired,omitempty"`
	Results     uint64   `json:"results"`
	Alerts      uint64   `json:"alerts"`
	Failed      uint64   `json:"having_failed"`
	LastResult  *Result  `json:"last_result,omitempty"`
	// Canary is a canary's verdict history: the latest conclusive intervals.
	Canary  []canary.Outcome `json:"canary,omitempty"`
	SavedAt time.Time        `json:"saved_at"`
	Engine  []byte           `json:"-"`
}

func (c *checkpoint) encode() ([]byte, error) {
	head, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	b := binary.AppendUvarint(make([]byte, 0, len(head)+len(c.Engine)+10), uint64(len(head)))
	b = append(b, head...)
	return append(b, c.Engine...), nil
}

func decodeCheckpoint(b []byte) (*checkpoint, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, errors.New("corrupt checkpoint header")
	}
	var c checkpoint
	if err := json.Unmarshal(b[k:k+int(n)], &c); err != nil {
		return nil, fmt.Errorf("corrupt checkpoint: %w", err)
	}
	c.Engine = b[k+int(n):]
	return &c, nil
}

// stateStore keeps checkpoints in KV. A value up to chunkSize is stored inline under the
// rule's name; a larger one in chunks written first, then a manifest under the name, so a
// reader sees either the old or the new checkpoint, never a mix.
type stateStore struct {
	kv jetstream.KeyValue
}

const chunkSize = 512 << 10

type manifest struct {
	Gen    uint64 `json:"gen"`
	Chunks int    `json:"chunks"`
	Size   int    `json:"size"`
	CRC    uint32 `json:"crc"`
}

// saved remembers where a rule's last checkpoint is, so the next save removes its chunks,
// and the revision of its key, so the next save replaces exactly that one.
type saved struct {
	gen    uint64
	chunks int
	rev    uint64 // 0: there is no checkpoint
}

// errCheckpointMoved fences a runner that no longer owns its rule: the checkpoint it loaded
// was replaced (or removed) by another instance since.
var errCheckpointMoved = errors.New("replaced by another instance meanwhile (the rule's lease moved)")

// save stores data as the rule's checkpoint, if the stored one is still the one at prev (a
// compare-and-set on the key's revision).
func (s *stateStore) save(ctx context.Context, name string, data []byte, prev *saved) error {
	if len(data) <= chunkSize {
		rev, err := s.swap(ctx, name, append([]byte{'I'}, data...), prev.rev)
		if err != nil {
			return err
		}
		s.dropChunks(ctx, name, *prev)
		*prev = saved{gen: prev.gen, rev: rev}
		return nil
	}
	// A random generation: two instances saving at once never write the same chunk keys.
	m := manifest{Gen: rand.Uint64() >> 1, Size: len(data), CRC: crc32.ChecksumIEEE(data)}
	for off := 0; off < len(data); off += chunkSize {
		end := min(off+chunkSize, len(data))
		if _, err := s.kv.Put(ctx, chunkKey(name, m.Gen, m.Chunks), data[off:end]); err != nil {
			return fmt.Errorf("save checkpoint %s: %w", name, err)
		}
		m.Chunks++
	}
	mb, _ := json.Marshal(m)
	rev, err := s.swap(ctx, name, append([]byte{'C'}, mb...), prev.rev)
	if err != nil {
		s.dropChunks(ctx, name, saved{gen: m.Gen, chunks: m.Chunks})
		return err
	}
	s.dropChunks(ctx, name, *prev)
	*prev = saved{gen: m.Gen, chunks: m.Chunks, rev: rev}
	return nil
}

// swap writes the checkpoint key if its revision is still rev (0: if it does not exist).
func (s *stateStore) swap(ctx context.Context, name string, v []byte, rev uint64) (uint64, error) {
	var err error
	var nrev uint64
	if rev == 0 {
		nrev, err = s.kv.Create(ctx, name, v)
	} else {
		nrev, err = s.kv.Update(ctx, name, v, rev)
	}
	switch {
	case err == nil:
		return nrev, nil
	case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, fmt.Errorf("save checkpoint %s: %w", name, errCheckpointMoved)
	default:
		return 0, fmt.Errorf("save checkpoint %s: %w", name, err)
	}
}

func chunkKey(name string, gen uint64, i int) string {
	return name + ".c" + strconv.FormatUint(gen, 10) + "." + strconv.Itoa(i)
}

func (s *stateStore) dropChunks(ctx context.Context, name string, prev saved) {
	for i := range prev.chunks {
		_ = s.kv.Purge(ctx, chunkKey(name, prev.gen, i))
	}
}

// load returns the rule's checkpoint bytes and where they are, or nil when there is none.
func (s *stateStore) load(ctx context.Context, name string) ([]byte, saved, error) {
	e, err := s.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, saved{}, nil
	}
	if err != nil {
		return nil, saved{}, fmt.Errorf("load checkpoint %s: %w", name, err)
	}
	v := e.Value()
	if len(v) == 0 {
		return nil, saved{rev: e.Revision()}, nil
	}
	switch v[0] {
	case 'I':
		return v[1:], saved{rev: e.Revision()}, nil
	case 'C':
		var m manifest
		if err := json.Unmarshal(v[1:], &m); err != nil {
			return nil, saved{}, fmt.Errorf("load checkpoint %s: corrupt manifest: %w", name, err)
		}
		data := make([]byte, 0, m.Size)
		for i := range m.Chunks {
			c, err := s.kv.Get(ctx, chunkKey(name, m.Gen, i))
			if err != nil {
				return nil, saved{}, fmt.Errorf("load checkpoint %s chunk %d: %w", name, i, err)
			}
			data = append(data, c.Value()...)
		}
		if len(data) != m.Size || crc32.ChecksumIEEE(data) != m.CRC {
			return nil, saved{}, fmt.Errorf("load checkpoint %s: chunks do not match the manifest", name)
		}
		return data, saved{gen: m.Gen, chunks: m.Chunks, rev: e.Revision()}, nil
	}
	return nil, saved{}, fmt.Errorf("load checkpoint %s: unknown format %q", name, v[0])
}

// remove deletes a rule's checkpoint and every chunk of it.
func (s *stateStore) remove(ctx context.Context, name string) error {
	if lister, err := s.kv.ListKeysFiltered(ctx, name+".>"); err == nil {
		for k := range lister.Keys() {
			_ = s.kv.Purge(ctx, k)
		}
	}
	if err := s.kv.Purge(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove checkpoint %s: %w", name, err)
	}
	return nil
}
