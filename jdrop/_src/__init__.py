"""jdrop's implementation; import the public names from :mod:`jdrop`."""
