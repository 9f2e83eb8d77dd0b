"""Brand stage: brand config (YAML), prompt templates in the Jinja sandbox, the term sanitizer
and reproducible seeds."""
