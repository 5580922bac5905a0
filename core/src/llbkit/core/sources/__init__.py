"""Core's built-in sources, registered under ``llbkit.sources`` like any third party's.

This release parses and checks each source's identifier and attributes (so a bad SourceOp is
refused by name before anything runs); fetching arrives with the engine.
"""
