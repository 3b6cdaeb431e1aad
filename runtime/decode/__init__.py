"""Decoders of Core ML's constexpr compression ops, as pure functions of numpy arrays."""
