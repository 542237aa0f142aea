"""sampler layer of wilo-backend."""
