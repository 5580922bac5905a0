"""``<REPLACE:name>://NAME``: an environment variable of the engine as a filesystem with one file."""
