"""store layer of wilo-backend."""
