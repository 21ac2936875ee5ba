"""Change trackers: which regions of a disk changed since the last committed cycle."""
