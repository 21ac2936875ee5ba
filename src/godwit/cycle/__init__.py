"""Building, uploading and committing cycles; the resume journal."""
