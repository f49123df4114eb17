"""Host-side data preparation: annotations -> examples -> TFRecord training channel.

Imports no TensorFlow, so it runs (and starts fast) on a laptop without it.
"""
