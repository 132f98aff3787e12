"""realsim sim package."""
