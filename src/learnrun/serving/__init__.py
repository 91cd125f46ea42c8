"""``learnrun model-server``: serve exports over TensorFlow Serving's REST API and KServe v2.

The package is imported only by the command line; importing it loads nothing heavy (the HTTP
stack, torch and numpy load inside the functions that need them). Modules:

* ``versions``: model configs, version policies, discovery, loading and atomic switching;
* ``batching``: dynamic batching of concurrent requests;
* ``tensors``: the request error, dtype names, JSON and input conversion shared by both
  protocols;
* ``tf_rest``: TensorFlow Serving's ``/v1`` REST API;
* ``kserve_v2``: KServe's v2 (Open Inference) protocol under ``/v2``;
* ``http1``: the HTTP/1.1 server (an asyncio protocol over httptools' parser);
* ``server``: the one request handler, the model server and its SIGTERM drain;
* ``cli``: the ``learnrun model-server`` flags.
"""
