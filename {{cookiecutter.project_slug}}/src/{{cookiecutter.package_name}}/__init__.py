"""Fine-tune a Hugging Face text classifier and serve it: settings, data, training, serving (see README.md)."""
