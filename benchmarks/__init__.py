"""Benchmark harness: our server vs vLLM's own OpenAI server vs the engine alone (issue 7)."""
