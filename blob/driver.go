package blob

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/driver"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// tenantBucket is the driver of a tenant's view: a driver over the portable
// bucket of the platform (as gocloud's prefixed bucket is a driver over a
// driver). Every key it is given is validated and joined under prefix;
// every key it returns had prefix, which it strips. With keys set, objects
// are encrypted with the tenant's streaming AEAD.
type tenantBucket struct {
	raw    *gcblob.Bucket
	id     tenant.ID
	prefix string        // "tenants/<id>/"
	keys   *keys.Manager // nil: objects are stored as written (WithoutEncryption)
	quota  *Quotas       // nil: no quotas
}

var _ driver.Bucket = (*tenantBucket)(nil)

// codedError is an error of this driver with its gocloud error code.
type codedError struct {
	code gcerrors.ErrorCode
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// ErrorCode implements driver.Bucket.
func (b *tenantBucket) ErrorCode(err error) gcerrors.ErrorCode {
	var ce *codedError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, ErrInvalidKey):
		return gcerrors.InvalidArgument
	case errors.Is(err, tenant.ErrCrossTenant), errors.Is(err, tenant.ErrNoTenant):
		return gcerrors.PermissionDenied
	case errors.Is(err, keys.ErrKeyDestroyed), errors.Is(err, keys.ErrNoKeys):
		return gcerrors.FailedPrecondition
	case errors.Is(err, keys.ErrDecrypt):
		return gcerrors.Internal
	case errors.Is(err, ErrQuotaExceeded):
		return gcerrors.ResourceExhausted
	case errors.Is(err, context.Canceled):
		return gcerrors.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return gcerrors.DeadlineExceeded
	}
	return gcerrors.Code(err)
}

// As implements driver.Bucket. It exposes nothing: the types of the
// platform's bucket (an S3 client, a GCS handle) reach every tenant's
// objects.
func (b *tenantBucket) As(any) bool { return false }

// ErrorAs implements driver.Bucket.
func (b *tenantBucket) ErrorAs(err error, i any) bool { return b.raw.ErrorAs(err, i) }

// noAs is the asFunc given to callers' Before* hooks: none of the
// platform's request types is exposed, since each can name any key of the
// bucket (an s3.PutObjectInput's Key, for one).
func noAs(any) bool { return false }

// hook returns f called with noAs, or nil, at most once.
func hook(f func(func(any) bool) error) func(func(any) bool) error {
	if f == nil {
		return nil
	}
	var called atomic.Bool
	return func(func(any) bool) error {
		if called.Swap(true) {
			return nil
		}
		return f(noAs)
	}
}

// scope checks that ctx carries the bucket's tenant: a call without a
// tenant fails with tenant.ErrNoTenant, one with another tenant's with
// tenant.ErrCrossTenant, as every tenant-scoped call does.
func (b *tenantBucket) scope(ctx context.Context) (context.Context, error) {
	id, err := tenant.Require(ctx, "blob")
	if err != nil {
		return nil, err
	}
	if id != b.id {
		return nil, fmt.Errorf("%w: the bucket is tenant %s's, the context tenant %s's", tenant.ErrCrossTenant, b.id, id)
	}
	return ctx, nil
}

// check validates key and scopes ctx.
func (b *tenantBucket) check(ctx context.Context, key string) (context.Context, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	return b.scope(ctx)
}

// Attributes implements driver.Bucket. The size is the plaintext's, from
// the stored size; the MD5 of the stored bytes (the ciphertext's) is not
// returned.
func (b *tenantBucket) Attributes(ctx context.Context, key string) (*driver.Attributes, error) {
	ctx, err := b.check(ctx, key)
	if err != nil {
		return nil, err
	}
	a, err := b.raw.Attributes(ctx, b.prefix+key)
	if err != nil {
		return nil, err
	}
	out := &driver.Attributes{
		CacheControl:       a.CacheControl,
		ContentDisposition: a.ContentDisposition,
		ContentEncoding:    a.ContentEncoding,
		ContentLanguage:    a.ContentLanguage,
		ContentType:        a.ContentType,
		Metadata:           a.Metadata,
		CreateTime:         a.CreateTime,
		ModTime:            a.ModTime,
		Size:               a.Size,
		MD5:                a.MD5,
		ETag:               a.ETag,
	}
	if b.keys == nil {
		return out, nil
	}
	if err := checkFormat(key, a.Metadata); err != nil {
		return nil, err
	}
	n, ok := plaintextSize(a.Size)
	if !ok {
		return nil, errNotEncrypted(key, "its size is no ciphertext's")
	}
	out.Size, out.MD5, out.Metadata = n, nil, userMetadata(a.Metadata)
	return out, nil
}

// listPageSize is the page size asked of the platform's bucket when the
// caller asks for none.
const listPageSize = 1000

// ListPaged implements driver.Bucket, within the tenant's prefix. The
// prefix asked for is validated like a key (a trailing slash allowed).
func (b *tenantBucket) ListPaged(ctx context.Context, opts *driver.ListOptions) (*driver.ListPage, error) {
	if err := validatePrefix(opts.Prefix); err != nil {
		return nil, err
	}
	ctx, err := b.scope(ctx)
	if err != nil {
		return nil, err
	}
	token := opts.PageToken
	if len(token) == 0 {
		token = gcblob.FirstPageToken
	}
	size := opts.PageSize
	if size <= 0 {
		size = listPageSize
	}
	objs, next, err := b.raw.ListPage(ctx, token, size, &gcblob.ListOptions{
		Prefix:     b.prefix + opts.Prefix,
		Delimiter:  opts.Delimiter,
		BeforeList: hook(opts.BeforeList),
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	page := &driver.ListPage{Objects: make([]*driver.ListObject, 0, len(objs)), NextPageToken: next}
	for _, o := range objs {
		key, ok := strings.CutPrefix(o.Key, b.prefix)
		if !ok {
			return nil, &codedError{gcerrors.Internal, fmt.Errorf("the platform's bucket listed a key outside the prefix asked for")}
		}
		lo := &driver.ListObject{Key: key, ModTime: o.ModTime, Size: o.Size, MD5: o.MD5, IsDir: o.IsDir}
		if b.keys != nil && !o.IsDir {
			lo.Size, _ = plaintextSize(o.Size) // 0 for a stored size no ciphertext has: such an object does not decrypt
			lo.MD5 = nil
		}
		page.Objects = append(page.Objects, lo)
	}
	return page, nil
}

// NewRangeReader implements driver.Bucket. An encrypted object is
// decrypted from its start, whatever the offset (the stream cipher has no
// random access), and authenticated segment by segment; a read to the end
// also checks that the object ends where its stored size says.
func (b *tenantBucket) NewRangeReader(ctx context.Context, key string, offset, length int64, opts *driver.ReaderOptions) (driver.Reader, error) {
	ctx, err := b.check(ctx, key)
	if err != nil {
		return nil, err
	}
	var rawOffset, rawLength int64 = 0, -1
	if b.keys == nil {
		rawOffset, rawLength = offset, length
	}
	raw, err := b.raw.NewRangeReader(ctx, b.prefix+key, rawOffset, rawLength, &gcblob.ReaderOptions{BeforeRead: hook(opts.BeforeRead)})
	if err != nil {
		return nil, err
	}
	r := &reader{raw: raw, attrs: driver.ReaderAttributes{ContentType: raw.ContentType(), ModTime: raw.ModTime(), Size: raw.Size()}}
	if b.keys == nil {
		r.r = raw
		return r, nil
	}
	if err := r.decrypt(ctx, b.keys, key, offset, length); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return r, nil
}

// reader reads an object of a tenant bucket.
type reader struct {
	raw   *gcblob.Reader
	attrs driver.ReaderAttributes
	r     io.Reader // the plaintext, from offset, limited to length
}

// decrypt makes r read the plaintext of the encrypted object key from
// offset, at most length bytes (all if negative). It decrypts the first
// segment, so that an object that does not decrypt fails here.
func (r *reader) decrypt(ctx context.Context, km *keys.Manager, key string, offset, length int64) error {
	size, ok := plaintextSize(r.raw.Size())
	if !ok {
		return errNotEncrypted(key, "its size is no ciphertext's")
	}
	r.attrs.Size = size
	sa, err := km.StreamingAEAD(ctx)
	if err != nil {
		return err
	}
	dr, err := sa.NewDecryptingReader(r.raw, associatedData(key))
	if err != nil {
		return err
	}
	v := &verifier{r: bufio.NewReaderSize(dr, segmentSize), want: size, key: key}
	if _, err := v.r.Peek(1); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if offset > 0 {
		if _, err := io.CopyN(io.Discard, v, min(offset, size)); err != nil {
			return err
		}
	}
	r.r = v
	if length >= 0 {
		r.r = io.LimitReader(v, length)
	}
	return nil
}

// Read implements io.Reader.
func (r *reader) Read(p []byte) (int, error) { return r.r.Read(p) }

// Close implements io.Closer.
func (r *reader) Close() error { return r.raw.Close() }

// Attributes implements driver.Reader; Size is the whole plaintext's.
func (r *reader) Attributes() *driver.ReaderAttributes { return &r.attrs }

// As implements driver.Reader; it exposes nothing.
func (r *reader) As(any) bool { return false }

// verifier counts the plaintext of a stream and, at its end, checks that it
// is as long as the stored size says.
type verifier struct {
	r    *bufio.Reader
	n    int64
	want int64
	key  string
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	if errors.Is(err, io.EOF) && v.n != v.want {
		return n, errNotEncrypted(v.key, "its plaintext is not as long as its stored size says")
	}
	return n, err
}

// NewTypedWriter implements driver.Bucket. Encrypted, the object's stored
// content type and metadata are the caller's (plus the format marker);
// ContentMD5 is checked by the portable bucket on the plaintext and not
// passed on (the stored bytes are the ciphertext).
func (b *tenantBucket) NewTypedWriter(ctx context.Context, key, contentType string, opts *driver.WriterOptions) (driver.Writer, error) {
	ctx, err := b.check(ctx, key)
	if err != nil {
		return nil, err
	}
	md := 0
	for k, v := range opts.Metadata {
		if strings.HasPrefix(k, reservedMetadataPrefix) {
			return nil, &codedError{gcerrors.InvalidArgument, fmt.Errorf("metadata key %s is reserved (%s...)", displayKey(k), reservedMetadataPrefix)}
		}
		md += len(k) + len(v)
	}
	if err := checkHeaders(md, contentType, opts); err != nil {
		return nil, err
	}
	wo := &gcblob.WriterOptions{
		BufferSize:                  opts.BufferSize,
		MaxConcurrency:              opts.MaxConcurrency,
		CacheControl:                opts.CacheControl,
		ContentDisposition:          opts.ContentDisposition,
		ContentEncoding:             opts.ContentEncoding,
		ContentLanguage:             opts.ContentLanguage,
		ContentType:                 contentType,
		Metadata:                    opts.Metadata,
		DisableContentTypeDetection: contentType == "",
		BeforeWrite:                 hook(opts.BeforeWrite),
		IfNotExist:                  opts.IfNotExist,
	}
	if b.keys == nil {
		wo.ContentMD5 = opts.ContentMD5
		if b.quota == nil {
			return b.raw.NewWriter(ctx, b.prefix+key, wo)
		}
		return b.newWriter(ctx, key, wo, nil)
	}
	return b.newEncryptingWriter(ctx, key, wo)
}

// MaxMetadata is the most bytes of user metadata (keys and values) an
// object of a tenant bucket takes, and MaxHeader the longest content
// type, cache control, content disposition, encoding or language: quotas
// count an object's stored size, not these, so they are bounded. 2 KiB of
// metadata is S3's limit, the smallest of the clouds'.
const (
	MaxMetadata = 2 << 10
	MaxHeader   = 1 << 10
)

// checkHeaders checks md bytes of metadata and the headers of a write
// against MaxMetadata and MaxHeader.
func checkHeaders(md int, contentType string, opts *driver.WriterOptions) error {
	if md > MaxMetadata {
		return &codedError{gcerrors.InvalidArgument, fmt.Errorf("metadata of %d bytes: at most %d", md, MaxMetadata)}
	}
	for _, h := range []struct{ name, v string }{
		{"content type", contentType}, {"cache control", opts.CacheControl}, {"content disposition", opts.ContentDisposition},
		{"content encoding", opts.ContentEncoding}, {"content language", opts.ContentLanguage},
	} {
		if len(h.v) > MaxHeader {
			return &codedError{gcerrors.InvalidArgument, fmt.Errorf("%s of %d bytes: at most %d", h.name, len(h.v), MaxHeader)}
		}
	}
	return nil
}

// newEncryptingWriter opens the writer of the encrypted object key.
func (b *tenantBucket) newEncryptingWriter(ctx context.Context, key string, wo *gcblob.WriterOptions) (*writer, error) {
	sa, err := b.keys.StreamingAEAD(ctx)
	if err != nil {
		return nil, err
	}
	md := make(map[string]string, len(wo.Metadata)+1)
	for k, v := range wo.Metadata {
		md[k] = v
	}
	md[formatKey] = formatV1
	wo.Metadata = md
	return b.newWriter(ctx, key, wo, func(w io.Writer) (io.WriteCloser, error) {
		return sa.NewEncryptingWriter(w, associatedData(key))
	})
}

// newWriter opens the writer of object key, encrypted with the writer
// that encrypt returns (nil: stored as written).
func (b *tenantBucket) newWriter(ctx context.Context, key string, wo *gcblob.WriterOptions, encrypt func(io.Writer) (io.WriteCloser, error)) (*writer, error) {
	ctx, cancel := context.WithCancel(ctx)
	raw, err := b.raw.NewWriter(ctx, b.prefix+key, wo)
	if err != nil {
		cancel()
		return nil, err
	}
	w := &writer{b: b, ctx: ctx, raw: raw, cancel: cancel, key: key}
	w.count.w = raw
	if b.quota != nil {
		w.nextCheck = quotaCheckFrom
	}
	if encrypt != nil {
		if w.enc, err = encrypt(&w.count); err != nil {
			w.abort()
			return nil, err
		}
	}
	return w, nil
}

// writer writes an object: the plaintext goes through the tenant's stream
// cipher (unless WithoutEncryption) into the platform's writer. Nothing is
// stored unless Close succeeds: an error aborts the platform's write.
// With quotas, Close commits the object only within the tenant's quota,
// and Write checks, as the object grows, that it may still fit.
type writer struct {
	b         *tenantBucket
	ctx       context.Context // raw's, carrying the tenant
	raw       *gcblob.Writer
	cancel    context.CancelFunc // aborts raw's write
	enc       io.WriteCloser     // nil: stored as written
	count     countingWriter     // the stored bytes, into raw
	n         int64              // plaintext bytes written
	key       string
	err       error // the first error of Write
	nextCheck int64 // the stored size at which Write next checks the quota; 0: never
}

// Write implements io.Writer.
func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	var n int
	var err error
	if w.enc != nil {
		n, err = w.enc.Write(p)
	} else {
		n, err = w.count.Write(p)
	}
	w.n += int64(n)
	if err == nil && w.nextCheck > 0 && w.count.n >= w.nextCheck {
		w.nextCheck = 2 * w.count.n
		err = w.checkQuota()
	}
	if err != nil {
		w.err = err
	}
	return n, err
}

// Close implements io.Closer: it writes the last segment and commits the
// object (within the tenant's quota), or aborts the write and stores
// nothing.
func (w *writer) Close() error {
	if w.err != nil {
		w.abort()
		return w.err
	}
	if w.enc != nil {
		if err := w.enc.Close(); err != nil {
			w.abort()
			return err
		}
		if want := ciphertextSize(w.n); w.count.n != want {
			// Never store an object whose plaintext size would be misreported.
			w.abort()
			return &codedError{gcerrors.Internal, fmt.Errorf("object %s: the stream cipher wrote %d bytes for %d, not the %d of format %s", displayKey(w.key), w.count.n, w.n, want, formatV1)}
		}
	}
	if w.b.quota == nil {
		err := w.raw.Close()
		w.cancel()
		return err
	}
	committing := false
	err := w.b.change(w.ctx, w.key, store.BlobUsage{Bytes: w.count.n, Objects: 1}, func(context.Context) error {
		committing = true
		if quotaHook != nil {
			quotaHook("reserved")
		}
		err := w.raw.Close()
		if quotaHook != nil && err == nil {
			quotaHook("committed")
		}
		return err
	})
	if !committing {
		w.abort()
	}
	w.cancel()
	return err
}

// abort cancels the platform's write, so that nothing is stored.
func (w *writer) abort() {
	w.cancel()
	_ = w.raw.Close()
}

// countingWriter counts what it passes to w.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Copy implements driver.Bucket, within the tenant's prefix. An encrypted
// object is bound to its key, so its bytes cannot be copied as they are:
// Copy decrypts the source and encrypts it anew for the destination,
// streaming, with the source's content type and metadata.
func (b *tenantBucket) Copy(ctx context.Context, dstKey, srcKey string, opts *driver.CopyOptions) error {
	if err := ValidateKey(dstKey); err != nil {
		return err
	}
	ctx, err := b.check(ctx, srcKey)
	if err != nil {
		return err
	}
	if opts.BeforeCopy != nil {
		if err := opts.BeforeCopy(noAs); err != nil {
			return err
		}
	}
	if b.keys == nil {
		if b.quota == nil {
			return b.raw.Copy(ctx, b.prefix+dstKey, b.prefix+srcKey, nil)
		}
		src, err := b.stat(ctx, srcKey)
		if err != nil {
			return err
		}
		if src.Objects == 0 {
			return &codedError{gcerrors.NotFound, fmt.Errorf("object %s not found", displayKey(srcKey))}
		}
		return b.change(ctx, dstKey, src, func(ctx context.Context) error {
			return b.raw.Copy(ctx, b.prefix+dstKey, b.prefix+srcKey, nil)
		})
	}
	a, err := b.Attributes(ctx, srcKey)
	if err != nil {
		return err
	}
	r, err := b.NewRangeReader(ctx, srcKey, 0, -1, &driver.ReaderOptions{})
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := b.newEncryptingWriter(ctx, dstKey, &gcblob.WriterOptions{
		CacheControl:                a.CacheControl,
		ContentDisposition:          a.ContentDisposition,
		ContentEncoding:             a.ContentEncoding,
		ContentLanguage:             a.ContentLanguage,
		ContentType:                 a.ContentType,
		Metadata:                    a.Metadata,
		DisableContentTypeDetection: a.ContentType == "",
	})
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.abort()
		return err
	}
	return w.Close()
}

// Delete implements driver.Bucket.
func (b *tenantBucket) Delete(ctx context.Context, key string, opts *driver.DeleteOptions) error {
	ctx, err := b.check(ctx, key)
	if err != nil {
		return err
	}
	del := func(ctx context.Context) error {
		return b.raw.DeleteWithOptions(ctx, b.prefix+key, &gcblob.DeleteOptions{BeforeDelete: hook(opts.BeforeDelete)})
	}
	if b.quota == nil {
		return del(ctx)
	}
	return b.change(ctx, key, store.BlobUsage{}, del)
}

// errSignedURL is the error of SignedURL.
var errSignedURL = &codedError{gcerrors.Unimplemented, errors.New("signed URLs are not supported by tenant buckets: the holder of one would read the stored ciphertext, or write an object that is not encrypted, without the tenant's keys")}

// SignedURL implements driver.Bucket: it is not supported.
func (b *tenantBucket) SignedURL(context.Context, string, *driver.SignedURLOptions) (string, error) {
	return "", errSignedURL
}

// Close implements driver.Bucket. A tenant's view holds nothing of its
// own: the platform's bucket stays open (Buckets.Close closes it).
func (b *tenantBucket) Close() error { return nil }
