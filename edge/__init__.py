"""The Raspberry Pi side: run, time and score the exported detectors (`python -m edge`).

TFLite paths need only numpy, Pillow and a TFLite runtime; TensorFlow is imported only to run a
SavedModel or frozen graph, pycocotools only by `evaluate`.
"""
