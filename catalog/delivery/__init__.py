"""Delivery queries: renditions of published assets, which asset is current, recalls,
retries of failed shots, and the rows the Shopify and Merchant Center exports stream."""
