#!/usr/bin/env python3
"""watchdog's polling approach, as a peer: two DirectorySnapshots and their diff."""
import sys

from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff

old = DirectorySnapshot(sys.argv[1])
new = DirectorySnapshot(sys.argv[1])
diff = DirectorySnapshotDiff(old, new)
print(len(diff.files_created) + len(diff.files_modified) + len(diff.files_deleted))
