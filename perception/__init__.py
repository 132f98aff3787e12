"""realsim perception package."""
