"""``learnrun model-server``: TensorFlow Serving's flags for learnrun exports.

One model: ``--model_name NAME --model_base_path DIR_OR_URL`` (the base path holds
integer-named version directories, e.g. ``model_dir/export/Servo``). Several models:
``--model_config_file FILE`` (JSON or TF Serving's text format; see
:func:`learnrun.serving.versions.parse_model_config`). Versions follow
``--model_version_policy`` (``latest:N``, ``all`` or ``specific:V1,V2``).
"""

from __future__ import annotations

import argparse
import logging

from learnrun.serving.versions import (
    ConfigError,
    ModelConfig,
    ModelManager,
    ServedModel,
    VersionPolicy,
    parse_model_config,
)

logger = logging.getLogger(__name__)


def add_model_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``learnrun model-server`` flags to ``parser``."""
    parser.add_argument("--model_name", default="default", metavar="NAME",
                        help="name of the model in the URLs (default: default)")
    parser.add_argument("--model_base_path", metavar="DIR_OR_URL",
                        help="directory or fsspec URL holding integer-named version directories, "
                        "e.g. MODEL_DIR/export/Servo")
    parser.add_argument("--model_config_file", metavar="FILE",
                        help="several models: JSON or TF Serving text format "
                        "(model_config_list { config { name: 'x' base_path: '/p' } })")
    parser.add_argument("--model_version_policy", default="latest:1", metavar="POLICY",
                        help="versions to serve: latest:N, all or specific:V1,V2 (default latest:1)")
    parser.add_argument("--rest_api_port", type=int, default=8501, metavar="PORT",
                        help="HTTP port (default 8501; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0, metavar="S",
                        help="seconds between looks for new versions (default 1; 0: load once)")
    parser.add_argument("--enable_batching", action="store_true",
                        help="batch concurrent requests to the same model version")
    parser.add_argument("--max_batch_size", type=int, default=32, metavar="N",
                        help="rows per batch at most (default 32)")
    parser.add_argument("--batch_timeout_micros", type=int, default=1000, metavar="US",
                        help="how long a batch waits to fill up, in microseconds (default 1000)")
    parser.add_argument("--num_batch_threads", type=int, default=0, metavar="N",
                        help="run model calls (batches, or single requests without batching) in "
                        "a pool of N threads; default 0: on the event loop, fastest for small "
                        "models")
    parser.add_argument("--max_request_bytes", type=int, default=32 * 1024 * 1024, metavar="N",
                        help="larger request bodies get HTTP 413 (default 32 MiB)")
    parser.add_argument("--drain_timeout_seconds", type=float, default=30.0, metavar="S",
                        help="on SIGTERM, how long requests in flight may take to finish")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")


def model_server_main(args: argparse.Namespace) -> int:
    """Run ``learnrun model-server`` with parsed ``args`` until SIGTERM; return 0.

    Bad flags or a bad model config raise
    :class:`learnrun.serving.versions.ConfigError` (the CLI prints it as one line, exit 2).
    """
    # reason: the export loader (torch) loads only when a server starts
    from learnrun.export import load_export

    # reason: the server (asyncio, the HTTP stack) too, not for every `learnrun` command
    from learnrun.serving.server import (
        ModelServer,
        ServingOptions,
        require_serving_stack,
        runner_factory,
    )

    require_serving_stack()
    if args.model_config_file and args.model_base_path:
        raise ConfigError("pass either --model_config_file or --model_base_path, not both")
    if args.model_config_file:
        try:
            with open(args.model_config_file, encoding="utf-8") as f:
                configs = parse_model_config(f.read())
        except OSError as exc:
            raise ConfigError(f"cannot read --model_config_file {args.model_config_file!r}: "
                              f"{exc.strerror or exc}") from None
    elif args.model_base_path:
        configs = [ModelConfig(args.model_name, args.model_base_path,
                               VersionPolicy.parse(args.model_version_policy))]
    else:
        raise ConfigError("pass --model_base_path DIR (e.g. MODEL_DIR/export/Servo) or "
                          "--model_config_file FILE")
    if args.file_system_poll_wait_seconds < 0:
        raise ConfigError("--file_system_poll_wait_seconds must be >= 0, got "
                          f"{args.file_system_poll_wait_seconds}")
    options = ServingOptions(
        host=args.host, port=args.rest_api_port, enable_batching=args.enable_batching,
        max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
        max_request_bytes=args.max_request_bytes,
        drain_timeout_seconds=args.drain_timeout_seconds,
        num_batch_threads=args.num_batch_threads)

    make_runner = runner_factory(options)
    manager = ModelManager([ServedModel(c, load_export, make_runner) for c in configs],
                           args.file_system_poll_wait_seconds)
    server = ModelServer(manager, options)
    server.listen()
    names = ", ".join(c.name for c in configs)
    print(f"learnrun model-server: serving {names} at {server.url} (TF Serving REST: "
          f"{server.url}/v1/models/NAME:predict, KServe v2: {server.url}/v2)", flush=True)
    return server.run()
