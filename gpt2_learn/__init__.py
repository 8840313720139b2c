__version__ = "0.1.0"

# The model module defines only the model; weights and fast attach its shortcuts (`GPT2Model.from_pretrained`,
# `from_checkpoint`, `save_checkpoint`, `save_pretrained`; `generate`), so they exist whatever is imported first.
from .cli import guard_imports as _guard_imports
_restore_interrupts = _guard_imports()      # in a command line: Ctrl+C while PyTorch imports is one line
from . import weights, fast  # noqa: E402,F401
if _restore_interrupts:
    _restore_interrupts()
del _guard_imports, _restore_interrupts
