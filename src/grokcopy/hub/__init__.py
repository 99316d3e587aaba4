"""The Hugging Face Hub both ways: push a run as a checkpoint series, analyse a series someone pushed."""
