"""Gate stage: CLIP scores and the policy decision, calibration, watermark and provenance on
the final file, and verification of any file."""
