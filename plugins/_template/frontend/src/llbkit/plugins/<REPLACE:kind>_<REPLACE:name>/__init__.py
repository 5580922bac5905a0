"""``--frontend <REPLACE:name>``: a one-line build file that makes a filesystem with one file."""
