"""Commands over the catalog: import, plan, brands, lineage, reproduce."""
