package invite

// SetAfterDeliver makes iv call fn after the SMTP server accepted a mail
// and before the mail is recorded; an error of fn fails the recording, as
// a database that went away at that moment would. nil removes it.
func SetAfterDeliver(iv *Inviter, fn func() error) { iv.afterDeliver = fn }
