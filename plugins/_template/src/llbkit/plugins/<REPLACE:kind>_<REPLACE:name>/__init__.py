"""<REPLACE:one line saying what the plugin does>."""
