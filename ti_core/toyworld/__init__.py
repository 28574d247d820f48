"""A small procedural world (shapes, colours, patterns, backgrounds) where textual inversion can be measured."""
