"""I/O adapters for mail: the mailbox interface, IMAP, Maildir, the SMTP outbox, OAuth2, TLS."""
