package main

import (
	"fmt"
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/rtmx-ai/tenancy/store"
)

// progress shows Admin.Migrate's progress over the fleet: a bar on stderr
// when stdout and stderr are both terminals, nothing otherwise.
type progress struct {
	bar *progressbar.ProgressBar // nil: off
	w   io.Writer
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(stdout, stderr io.Writer, off bool) *progress {
	if off || !isTerminal(stdout) || !isTerminal(stderr) {
		return &progress{}
	}
	return &progress{w: stderr}
}

// update is MigrateOptions.Progress: it is called from one goroutine at
// a time.
func (p *progress) update(m store.MigrateProgress) {
	if p.w == nil {
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions(m.Total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription("migrating tenants"),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	}
	if m.Err != nil {
		p.bar.Describe(fmt.Sprintf("migrating tenants (%d failed)", m.Failed))
	}
	_ = p.bar.Set(m.Migrated + m.Failed)
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
