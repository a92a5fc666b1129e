"""Shared foundation: settings, paths, wire-independent schemas, logging and protocols.

`core` imports nothing else of ours; every other package may import it.
"""
