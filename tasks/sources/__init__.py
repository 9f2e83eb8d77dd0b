"""Source images for the line: fetching them, and the packshot part of the GPU step."""
