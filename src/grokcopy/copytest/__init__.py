"""The paper's copy test: the task (random prefix/suffix sequences) and its scoring (one packed pass per sample)."""
