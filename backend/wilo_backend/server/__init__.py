"""server layer of wilo-backend."""
