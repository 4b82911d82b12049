"""Test harness for real services: Dovecot IMAP, an aiosmtpd SMTP sink, fresh databases.

The fixtures in ``tests/conftest.py`` wrap these helpers. They are plain modules (not a
pytest plugin) so that a benchmark or a debugging script can start the same servers.
"""
