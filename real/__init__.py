"""realsim real package."""
