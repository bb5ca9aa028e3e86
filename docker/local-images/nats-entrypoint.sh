#!/bin/sh
# Like the official nats image: arguments that start with "-" are options for nats-server.
set -e
case "${1:-}" in
  -*) set -- nats-server "$@" ;;
esac
exec "$@"
