package lifecycle

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/streamingaead"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// stage is a temporary directory for the files of an archive being
// written or read, each file encrypted with a key that exists only in
// this process's memory: a crash in the middle of a backup or a restore
// leaves ciphertext no one can open, never the tenant's rows, objects or
// opened secrets in the clear, even after its keys are shredded.
type stage struct {
	dir  string
	aead tink.StreamingAEAD
}

// stalePrefixes are the names of stage directories; staleAge is how old
// one must be for newStage to remove it as left by a crashed process.
var stalePrefixes = []string{"tenancy-backup-", "tenancy-restore-"}

const staleAge = time.Hour

// newStage makes a stage in parent (os.TempDir() if ""), after removing
// stage directories there older than staleAge (their keys died with the
// processes that made them).
func newStage(parent, prefix string) (*stage, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	removeStale(parent)
	h, err := keyset.NewHandle(streamingaead.AES256GCMHKDF4KBKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("stage key: %w", err)
	}
	a, err := streamingaead.New(h)
	if err != nil {
		return nil, fmt.Errorf("stage key: %w", err)
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return nil, err
	}
	return &stage{dir: dir, aead: a}, nil
}

func removeStale(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		for _, p := range stalePrefixes {
			if !strings.HasPrefix(e.Name(), p) {
				continue
			}
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleAge {
				_ = os.RemoveAll(filepath.Join(parent, e.Name()))
			}
		}
	}
}

// path returns the local path of file i.
func (s *stage) path(i int) string { return filepath.Join(s.dir, fmt.Sprintf("%06d", i)) }

// create returns a writer of file i; Close it to finish the file.
func (s *stage) create(i int) (io.WriteCloser, error) {
	f, err := os.OpenFile(s.path(i), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	w, err := s.aead.NewEncryptingWriter(f, []byte(filepath.Base(s.path(i))))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &stageWriter{w: w, f: f}, nil
}

type stageWriter struct {
	w io.WriteCloser
	f *os.File
}

func (s *stageWriter) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *stageWriter) Close() error                { return errors.Join(s.w.Close(), s.f.Close()) }

// open returns a reader of file i.
func (s *stage) open(i int) (io.ReadCloser, error) {
	f, err := os.Open(s.path(i))
	if err != nil {
		return nil, err
	}
	r, err := s.aead.NewDecryptingReader(f, []byte(filepath.Base(s.path(i))))
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

// remove deletes the stage.
func (s *stage) remove() { _ = os.RemoveAll(s.dir) }
