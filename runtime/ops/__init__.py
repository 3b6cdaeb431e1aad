"""MIL op implementations as pure numpy functions, and the registry the interpreter uses."""
