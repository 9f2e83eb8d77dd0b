"""Delivery: from a published master to what a store and a feed take.

Renditions per channel (``renditions``), public URLs (``urls``), alt text (``alt_text``) and
the export file writers (``feeds``). Pure stages: no database, no Celery.
"""
