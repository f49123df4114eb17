"""`serve`: the trained detector behind SageMaker's hosting contract (endpoints, batch transform).

    config.py     environment -> one validated ServeConfig (port, workers, limits, which export)
    exports.py    which file of /opt/ml/model serves, picked from what training wrote
    decoding.py   request bodies (images, JSON, JSON Lines) and options -> RGB arrays, with limits
    responses.py  detections -> the JSON shapes (ours, and JumpStart's `verbose` one)
    model.py      the loaded detector of one worker: background load, warm-up, one lock
    app.py        the WSGI application: /ping, /invocations, /execution-parameters
    server.py     gunicorn around it: bind first, then workers that each load the model once

Only config.py and server.py run in the master process, so it binds the port before anything
heavy (numpy, Pillow, a TFLite runtime, TensorFlow) is imported; each worker imports those.
"""
