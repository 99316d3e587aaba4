"""Stage 1, training: config -> data -> model -> CopyTrainer, with the callbacks that measure it.

The trainer wires the analyses (grokcopy.copytest, grokcopy.analysis) and the Hub push
(grokcopy.hub.push) in as callbacks; nothing below this package imports it.
"""
