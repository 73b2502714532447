"""The process: the engine and its front doors started, served and drained together."""
