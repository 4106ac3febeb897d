"""Tokenizers for SPaR's chat models: load, chat-format, tokenise with loss masks, pad.

```python
from spar_jax.tokenizer import Tokenizer, pad_batch

tok = Tokenizer.load("path/to/Meta-Llama-3-8B-Instruct")  # family detected: 'llama3'
messages = [{"role": "user", "content": "Write a haiku."}]
prompt = tok.encode_prompt(messages)  # ids, ending with the assistant header
tokens, loss_mask = tok.encode_pair(messages, "response text")  # mask on response + <|eot_id|>
batch, mask = pad_batch([prompt], tok.pad_id, side="left")  # int32 [B, T], bool [B, T]
```

`import spar_jax.tokenizer` is light: transformers and sentencepiece are imported
when a tokenizer is loaded.
"""

from spar_jax.tokenizer.batching import pad_batch, pad_loss_masks
from spar_jax.tokenizer.core import Tokenizer
from spar_jax.tokenizer.errors import (
    ChatTemplateError,
    ConversationError,
    FamilyError,
    TokenizerLoadError,
    TokenizerNotFoundError,
)
from spar_jax.tokenizer.formats import FAMILIES, GLM4, LLAMA3, Family, Message

__all__ = [
    "FAMILIES",
    "GLM4",
    "LLAMA3",
    "ChatTemplateError",
    "ConversationError",
    "Family",
    "FamilyError",
    "Message",
    "Tokenizer",
    "TokenizerLoadError",
    "TokenizerNotFoundError",
    "pad_batch",
    "pad_loss_masks",
]
