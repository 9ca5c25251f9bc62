"""PromptIntern: internalize a recurring prompt into LoRA weights, and measure what it saves."""

__version__ = "0.1.0"
