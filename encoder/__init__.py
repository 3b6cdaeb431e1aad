"""sparseblob.encoder: pruning masks, bitmask encoding, palettization and quantization."""
