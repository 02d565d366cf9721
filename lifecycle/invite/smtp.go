package invite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime/quotedprintable"
	"net"
	"net/smtp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rtmx-ai/tenancy/tenant"
)

// deliver hands msg for to to the SMTP server: one connection, one
// message, bounded by the Config's timeout and by ctx.
func (iv *Inviter) deliver(ctx context.Context, to string, msg []byte) (err error) {
	c := iv.cfg
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		// A context that ended explains the I/O error it caused.
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
	}()
	// The end of ctx (the timeout, or the caller's) interrupts whatever
	// I/O is under way; ctx.Err is set by then, so the error says why.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	cl, err := smtp.NewClient(conn, c.host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("greeting: %w", err)
	}
	defer cl.Close()
	if err := cl.Hello(c.hello); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if c.startTLS != StartTLSNone {
		if ok, _ := cl.Extension("STARTTLS"); ok {
			if err := cl.StartTLS(c.tls); err != nil {
				return fmt.Errorf("STARTTLS: %w", err)
			}
		} else if c.startTLS == StartTLSRequired {
			return errors.New("the server does not offer STARTTLS, and Config.SMTP.StartTLS is required")
		}
	}
	if c.auth != nil {
		if ok, _ := cl.Extension("AUTH"); !ok {
			return errors.New("the server does not offer AUTH, and Config.SMTP.Auth is set")
		}
		if err := cl.Auth(c.auth); err != nil {
			return fmt.Errorf("AUTH: %w", err)
		}
	}
	if err := cl.Mail(c.from.Address); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := cl.Rcpt(to); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := cl.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	// The server's answer to the end of the data is the hand-over: from
	// here on, the mail is the server's.
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	_ = cl.Quit()
	return nil
}

// message returns the invitation mail, lines ending in LF (net/smtp's data
// writer sends CRLF and dot-stuffs). Every header value is either fixed,
// checked to be a bare address, or Q-encoded (always); the body is
// quoted-printable UTF-8 text.
func (iv *Inviter) message(info tenant.Info, to, messageID, thread, link string, now, expires time.Time) []byte {
	c := iv.cfg
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\n") }
	hdr("From", c.fromHdr)
	hdr("To", "<"+to+">")
	hdr("Subject", encodeHeader("Invitation to administer "+info.Name))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", messageID)
	hdr("References", thread)
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	hdr("Auto-Submitted", "auto-generated")
	b.WriteString("\n")
	qp := quotedprintable.NewWriter(&b)
	fmt.Fprintf(qp, "You are invited to be the first administrator of %s (tenant %s).\r\n\r\n", info.Name, info.ID)
	fmt.Fprintf(qp, "Accept the invitation with this link. It works once, until %s:\r\n\r\n", expires.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(qp, "%s\r\n\r\n", link)
	fmt.Fprintf(qp, "If you did not expect this invitation, ignore this message.\r\n")
	_ = qp.Close()
	return b.Bytes()
}

// encodeHeader returns s as RFC 2047 Q-encoded words, always, folded onto
// lines of their own: mime.QEncoding leaves printable ASCII as it is, and
// so would pass on a name holding "=?utf-8?b?...?=", which mail clients
// decode into whatever it encodes (the format characters checkName
// refuses, say). Encoded, such text is shown as it was written.
func encodeHeader(s string) string {
	const maxWord = 75 - len("=?utf-8?q??=")
	var words []string
	var w strings.Builder
	for _, r := range s {
		var enc string
		switch {
		case r == ' ':
			enc = "_"
		case r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!*+-/", r)):
			enc = string(r)
		default:
			var b [utf8.UTFMax]byte
			for _, c := range b[:utf8.EncodeRune(b[:], r)] {
				enc += fmt.Sprintf("=%02X", c)
			}
		}
		if w.Len()+len(enc) > maxWord {
			words = append(words, "=?utf-8?q?"+w.String()+"?=")
			w.Reset()
		}
		w.WriteString(enc)
	}
	words = append(words, "=?utf-8?q?"+w.String()+"?=")
	return strings.Join(words, "\n ")
}
