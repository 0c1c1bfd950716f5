"""Training: accepted traces -> SFT examples (`examples`, `inputs`), `ores sft` on TRL's
SFTTrainer (`sft`, its settings in `settings`), and launching at scale (`launch`).

Import the submodules you need: torch, transformers and TRL are imported only where a run needs them.
"""
