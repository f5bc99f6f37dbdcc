"""Serving trained students locally: `engine` (llama.cpp, no byLLM needed) and `student`
(the byLLM model class). Importing this package loads neither llama.cpp nor jaclang."""
