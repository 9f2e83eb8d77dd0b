"""Commands on image quality and review: review, verify, calibrate."""
