"""The project's tests. They never reach the Hugging Face Hub, in the test process either: huggingface_hub and
datasets read these variables when they are first imported, which is after this package is."""

import os

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
