"""Everything that knows the training engine (TRL): the TAPO trainer and its config, row batching,
callbacks, the model card, supervised fine-tuning for the cold start, and building and running a
trainer from a run config. Nothing outside this folder imports `trl`; the core imports nothing here.
"""
