"""occ-client: a command-line client and small library for the OCC gateway.

The library: ``gateway`` (the gateway's HTTP API), ``erc20`` (the payment token on chain),
``streams`` (multipart and raw file bodies), ``keys`` and ``nonces`` (signing), ``checks``,
``cache`` (saved quotes) and ``errors``. The command line: ``cli`` (the parser and ``main``),
``args`` (argument types), ``config`` and ``commands``. The library prints nothing but the
gateway's rate-limit notice; the package imports only ``client`` and ``occ_protocol``.
"""
