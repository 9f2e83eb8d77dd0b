"""CSV import: formats, the streaming source, the row store and the importer."""
