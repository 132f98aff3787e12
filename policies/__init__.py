"""realsim policies package."""
