"""What the scanner twins use: the records they produce, the filters, hashing, the
filesystem kind, what git says about a tree and the labels a file is queued with."""
