"""The window onto the registry: a console for operators and an API for programs.

Everything shown here was written by a stranger: pages are Jinja2 templates with
autoescape on, customer HTML is never rendered (the text the pipeline extracted is
shown), attachments are downloaded, never displayed inline. The console reads the
same database as the daemon, in its own threads, and never holds up intake.
"""
