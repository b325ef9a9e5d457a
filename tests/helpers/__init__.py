"""Plain helpers for the tests, one module a concern: trees (files with exact mtimes), twins
(the scanner under test), gitrepo, db (the database through the store), ondisk (the file as
another process reads it), cli (wqscan in process and as a child), procs (processes and
polling), foreign (databases other tools built), pg (PostgreSQL)."""
