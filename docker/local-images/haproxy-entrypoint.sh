#!/bin/sh
# Like the official haproxy image: arguments that start with "-" are options for haproxy, and
# haproxy runs in master-worker mode in the foreground (-W -db), logging to stdout.
set -e
case "${1:-}" in
  -*) set -- haproxy "$@" ;;
esac
if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
