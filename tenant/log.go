package tenant

import (
	"context"
	"log/slog"
)

// LogKey is the attribute key under which [NewLogHandler] records the tenant.
const LogKey = "tenant_id"

// NewLogHandler returns a [slog.Handler] that adds a tenant_id attribute,
// taken from the context passed to the logging call, to every record, and
// then hands the record to next. Records logged without a tenant in the
// context are passed on unchanged. Use the Context variants of the logging
// calls (InfoContext, LogAttrs) so that the context reaches the handler.
//
// The attribute is added to the record itself, so if the logger was narrowed
// with WithGroup it appears inside that group, like any other record
// attribute.
func NewLogHandler(next slog.Handler) slog.Handler {
	if h, ok := next.(*logHandler); ok {
		return h // already wrapped: add the attribute once
	}
	return &logHandler{next: next}
}

type logHandler struct {
	next slog.Handler
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := FromContext(ctx); ok {
		r = r.Clone()
		r.AddAttrs(slog.String(LogKey, id.s))
	}
	return h.next.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logHandler{next: h.next.WithAttrs(attrs)}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{next: h.next.WithGroup(name)}
}
