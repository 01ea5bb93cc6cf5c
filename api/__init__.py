"""FastAPI prediction service over exported tabfm models."""
