#!/bin/sh
# Run a command in a private network namespace whose only interface is loopback, so nothing a
# test starts (servers, browsers, media) can reach another address. Where namespaces are not
# permitted (an unprivileged developer machine), run it as is and say so.
if unshare --net true 2>/dev/null; then
  exec unshare --net sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "tests/netns.sh: no network namespace here; running without isolation" >&2
exec "$@"
