"""Packshot stages: cut the catalog's own product out, place it on the canvas, composite the
generated scene around it pixel for pixel, and check that the product survived."""
