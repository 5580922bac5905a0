"""The session protocol: what crosses between a client and llbkitd besides the build itself."""
