"""The HTTP routes, one module per API family: thin shells that parse, call one service
function and encode the answer (shared helpers are in :mod:`carina.server.routing`)."""
