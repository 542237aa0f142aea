"""sensor layer of wilo-backend."""
