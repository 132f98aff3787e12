"""realsim kernels package."""
